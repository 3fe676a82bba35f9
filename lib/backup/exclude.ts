// --exclude patterns, gitignore-like: a pattern without '/' matches a name at any depth;
// with '/', it matches the path relative to the source root. '*' and '?' stay within a
// name, '**' crosses directories.

export class ExcludeMatcher {
  private readonly anywhere: RegExp[] = [];
  private readonly anchored: RegExp[] = [];

  constructor(readonly patterns: readonly string[]) {
    for (const raw of patterns) {
      const p = raw.replace(/\/+$/, '');
      if (p.includes('/')) this.anchored.push(globToRegExp(p.replace(/^\/+/, '')));
      else this.anywhere.push(globToRegExp(p));
    }
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** `relPath` has no leading slash: 'user/Maildir/cur'. */
  excludes(relPath: string, name: string): boolean {
    return this.anywhere.some((r) => r.test(name)) || this.anchored.some((r) => r.test(relPath));
  }
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
        if (glob[i + 1] === '/') i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}
