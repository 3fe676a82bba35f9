// Loading fuse-native. Its addon links against libfuse.so.2, which many machines lack
// (Debian installs libfuse3 by default). fuse-shared-library-linux, a dependency of
// fuse-native, ships a libfuse.so with that soname: when the system has none, we load
// that copy first, with RTLD_GLOBAL so the addon's dependency resolves to it, and
// RTLD_NODELETE so it stays loaded although process.dlopen rejects it as "not a Node
// module". Then `npm ci` alone is enough on a fresh machine.

import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { SnapfsError } from '../errors.js';

const require = createRequire(import.meta.url);

/** glibc's RTLD_NODELETE (not in os.constants.dlopen). */
const RTLD_NODELETE = 0x1000;

/** The parts of fuse-native's class that snapfs uses (it ships no types). */
export interface FuseNativeInstance {
  mnt: string;
  opts: Record<string, unknown>;
  _thread: Buffer | null;
  mount(cb: (err: Error | null) => void): void;
  _fuseOptions(): string;
  _close(cb: (err: Error | null) => void): void;
}

export interface FuseNativeModule {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseNativeInstance;
  prototype: FuseNativeInstance;
}

export interface FuseNativeBinding {
  fuse_native_unmount(mnt: string, thread: Buffer): void;
}

let loaded: { Fuse: FuseNativeModule; binding: FuseNativeBinding; libfuse: string } | undefined;

function shippedLibfuse(): string {
  // fuse-shared-library picks the package for this platform; its `lib` is the .so path.
  const shared = require('fuse-shared-library') as { lib?: string };
  if (!shared.lib) throw new Error('fuse-shared-library does not name a libfuse for this platform');
  return shared.lib;
}

function preloadLibfuse(lib: string): void {
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | RTLD_NODELETE;
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, lib, flags);
  } catch (err) {
    // Expected: the library loaded but is not a Node addon. Anything else is real.
    if (!/did not self-register/.test((err as Error).message)) throw err;
  }
}

/** fuse-native's class and its native binding, with libfuse.so.2 made available. */
export function loadFuseNative(): { Fuse: FuseNativeModule; binding: FuseNativeBinding; libfuse: string } {
  if (loaded) return loaded;
  let libfuse = 'system libfuse.so.2';
  let Fuse: FuseNativeModule;
  try {
    Fuse = require('fuse-native') as FuseNativeModule;
  } catch (err) {
    if (!/libfuse\.so\.2/.test((err as Error).message)) {
      throw new SnapfsError('IO_ERROR', `cannot load fuse-native: ${(err as Error).message}`, { cause: err });
    }
    try {
      libfuse = shippedLibfuse();
      preloadLibfuse(libfuse);
      Fuse = require('fuse-native') as FuseNativeModule;
    } catch (err2) {
      throw new SnapfsError('IO_ERROR', `cannot load libfuse.so.2 (neither the system's nor the one fuse-shared-library ships): ${(err2 as Error).message}`, { cause: err2 });
    }
  }
  // The same addon instance fuse-native loaded (node-gyp-build resolves the same file,
  // and Node caches addons by path): needed to release the mount's event-loop handle.
  const dir = path.dirname(require.resolve('fuse-native/package.json'));
  const nodeGypBuild = createRequire(path.join(dir, 'index.js'))('node-gyp-build') as (d: string) => FuseNativeBinding;
  const binding = nodeGypBuild(dir);
  loaded = { Fuse, binding, libfuse };
  return loaded;
}
