// The function modules convex-test may load, keyed by path. convex-test finds the functions'
// root from the "_generated" key, so the _generated files must be in the glob.
export const modules = import.meta.glob(["../*.ts", "!../*.config.ts", "../_generated/*.js"]);
