// Where things live inside a repository directory.
import path from 'node:path';

export class RepoLayout {
  constructor(readonly root: string) {}
  get config(): string {
    return path.join(this.root, 'config.json');
  }
  get packs(): string {
    return path.join(this.root, 'packs');
  }
  get index(): string {
    return path.join(this.root, 'index');
  }
  get snapshots(): string {
    return path.join(this.root, 'snapshots');
  }
  get lock(): string {
    return path.join(this.root, 'lock');
  }
  /** Pid files of background mounts and similar runtime state. */
  get run(): string {
    return path.join(this.root, 'run');
  }
  /** Packs being written; anything here after a crash is garbage. */
  get incoming(): string {
    return path.join(this.root, 'packs', 'incoming');
  }
  packFile(hexId: string): string {
    return path.join(this.root, 'packs', hexId.slice(0, 2), `${hexId}.pack`);
  }
  snapshotFile(hexId: string): string {
    return path.join(this.root, 'snapshots', `${hexId}.json`);
  }
}
