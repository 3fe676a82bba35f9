// Imported first by main: libuv sizes its thread pool at first use, and the writer keeps
// many stats and reads in flight (the default of 4 threads would serialize them).
process.env.UV_THREADPOOL_SIZE ??= '16';
export {};
