// convex-bridge: `node bridge/main.mjs [--port N] [--data FILE] [--admin-key KEY] [--verbose]`
//
// Listens on 127.0.0.1 only. --port (or PORT; 0 picks a free port; default 3210, a local
// Convex backend's port). Prints exactly one line to stdout once it accepts calls:
//   convex-bridge listening on http://127.0.0.1:<port>
// and nothing else there; diagnostics go to stderr. SIGTERM/SIGINT finish the calls in flight
// (and their snapshot) before exiting 0.
//
// The admin key, which internal functions require: --admin-key, else CONVEX_BRIDGE_ADMIN_KEY
// (the better way: a command line is visible to every local user through `ps`, an
// environment is not). With neither, a random key is made and written to stderr, for a person
// who started the bridge by hand; a program chooses the key and passes it in the environment.
import { randomBytes } from "node:crypto";
import { createBridge, type Bridge } from "./server.ts";

const USAGE =
  "usage: CONVEX_BRIDGE_ADMIN_KEY=KEY node bridge/main.mjs [--port N] [--data FILE] " +
  "[--admin-key KEY] [--verbose]";
// What an HTTP header value can carry unchanged, and what a shell prints back intact.
const ADMIN_KEY = /^[\x21-\x7e]{16,512}$/;

function fail(message: string): never {
  process.stderr.write(`convex-bridge: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parse(argv: string[]) {
  let port: string | undefined = process.env.PORT;
  let dataFile: string | undefined;
  let adminKey: string | undefined = process.env.CONVEX_BRIDGE_ADMIN_KEY || undefined;
  let verbose = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? arg.split(/=(.*)/s) : [arg];
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`);
    if (flag === "--port") port = value();
    else if (flag === "--data") dataFile = value();
    else if (flag === "--admin-key") adminKey = value();
    else if (flag === "--verbose") verbose = true;
    else if (flag === "--help" || flag === "-h") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else fail(`unknown argument ${arg}`);
  }
  const portNumber = Number(port ?? 3210);
  if (!Number.isInteger(portNumber) || portNumber < 0 || portNumber > 65535) {
    fail(`--port must be a whole number from 0 to 65535, got ${port}`);
  }
  if (adminKey !== undefined && !ADMIN_KEY.test(adminKey)) {
    // The key itself is not repeated: it may be a real secret given by mistake.
    fail("the admin key must be 16 to 512 printable ASCII characters without spaces");
  }
  return { port: portNumber, dataFile, adminKey, verbose };
}

const parsed = parse(process.argv.slice(2));
const { port, dataFile, verbose } = parsed;
let adminKey = parsed.adminKey;
if (adminKey === undefined) {
  adminKey = randomBytes(32).toString("base64url");
  process.stderr.write(
    `convex-bridge: admin key (generated for this run): ${adminKey}\n` +
      "convex-bridge: give it to the caller as CONVEX_DEPLOY_KEY; set " +
      "CONVEX_BRIDGE_ADMIN_KEY to choose one.\n",
  );
}

let bridge: Bridge;
try {
  bridge = await createBridge({ dataFile, adminKey, verbose });
} catch (error) {
  process.stderr.write(`convex-bridge: ${(error as Error).message}\n`);
  process.exit(1);
}
const { server } = bridge;

server.on("error", (error: NodeJS.ErrnoException) => {
  const hint = error.code === "EADDRINUSE" ? ` (port ${port} is taken; try --port 0)` : "";
  process.stderr.write(`convex-bridge: ${error.message}${hint}\n`);
  process.exit(1);
});

server.listen(port, "127.0.0.1", () => {
  const address = server.address();
  const actual = typeof address === "object" && address !== null ? address.port : port;
  if (bridge.restored > 0) {
    process.stderr.write(`convex-bridge: loaded ${bridge.restored} documents from ${dataFile}\n`);
  }
  process.stdout.write(`convex-bridge listening on http://127.0.0.1:${actual}\n`);
});

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  server.close();
  await bridge.drain();
  server.closeAllConnections();
  process.exit(0);
}
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
