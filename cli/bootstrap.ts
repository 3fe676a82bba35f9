// Imported first by main: libuv sizes its thread pool at first use, and the writer keeps
// many stats and reads in flight (the default of 4 threads would serialize them).
process.env.UV_THREADPOOL_SIZE ??= '16';
export {};

// lmdb-js prints every failed commit with console.error, stack trace included, before it
// rejects the commit; snapfs reports that rejection itself, once, with its exit code (a full
// disk: 'no space left on device', exit 16). A stack trace on stderr reads as a crash.
const consoleError = console.error.bind(console);
console.error = (...args: unknown[]): void => {
  const first = args[0];
  if (first instanceof Error && /[\\/]node_modules[\\/]lmdb[\\/]/.test(first.stack ?? '')) return;
  consoleError(...args);
};
