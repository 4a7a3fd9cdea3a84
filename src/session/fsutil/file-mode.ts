/**
 * fsutil sends Go's os.FileMode bits, not a unix st_mode. These convert
 * between the two. Results are unsigned 32-bit (ModeDir is bit 31).
 */
export const GoMode = {
  Dir: 0x8000_0000,
  Symlink: 0x0800_0000,
  Device: 0x0400_0000,
  NamedPipe: 0x0200_0000,
  Socket: 0x0100_0000,
  Setuid: 0x0080_0000,
  Setgid: 0x0040_0000,
  CharDevice: 0x0020_0000,
  Sticky: 0x0010_0000,
  Irregular: 0x0008_0000,
} as const;

/** The bits that make an entry something other than a regular file. */
const GO_MODE_TYPE =
  (GoMode.Dir | GoMode.Symlink | GoMode.NamedPipe | GoMode.Socket | GoMode.Device | GoMode.CharDevice | GoMode.Irregular) >>> 0;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFBLK = 0o060000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;
const S_IFREG = 0o100000;

/** Unix st_mode → Go FileMode. */
export function goModeFromUnix(mode: number): number {
  let go = mode & 0o777;
  switch (mode & S_IFMT) {
    case S_IFDIR: go |= GoMode.Dir; break;
    case S_IFLNK: go |= GoMode.Symlink; break;
    case S_IFBLK: go |= GoMode.Device; break;
    case S_IFCHR: go |= GoMode.Device | GoMode.CharDevice; break;
    case S_IFIFO: go |= GoMode.NamedPipe; break;
    case S_IFSOCK: go |= GoMode.Socket; break;
  }
  if (mode & 0o4000) go |= GoMode.Setuid;
  if (mode & 0o2000) go |= GoMode.Setgid;
  if (mode & 0o1000) go |= GoMode.Sticky;
  return go >>> 0;
}

/** Go FileMode → unix st_mode. */
export function unixModeFromGo(go: number): number {
  let mode = go & 0o777;
  if (go & GoMode.Dir) mode |= S_IFDIR;
  else if (go & GoMode.Symlink) mode |= S_IFLNK;
  else if (go & GoMode.Device) mode |= go & GoMode.CharDevice ? S_IFCHR : S_IFBLK;
  else if (go & GoMode.NamedPipe) mode |= S_IFIFO;
  else if (go & GoMode.Socket) mode |= S_IFSOCK;
  else mode |= S_IFREG;
  if (go & GoMode.Setuid) mode |= 0o4000;
  if (go & GoMode.Setgid) mode |= 0o2000;
  if (go & GoMode.Sticky) mode |= 0o1000;
  return mode;
}

export function isRegularGoMode(go: number): boolean {
  return ((go & GO_MODE_TYPE) >>> 0) === 0;
}
