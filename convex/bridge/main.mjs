// Starts the bridge with plain `node`, from any working directory: registers tsx (pinned in
// package.json) so Node can load the TypeScript of convex/, then runs cli.ts in this process
// (no child process, so the pid a caller holds is the server's).
import { register } from "tsx/esm/api";

register();
await import("./cli.ts");
