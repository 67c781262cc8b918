/** The package's version, for every command's `--version`: read from the package.json installed with it. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** "flotilla 0.1.0", from the package.json two levels above dist/<folder>/. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { name: string; version: string };
  return `${pkg.name} ${pkg.version}`;
}
