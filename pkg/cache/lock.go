package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockWait bounds how long a command waits for another one on the same cache.
const lockWait = 2 * time.Minute

// lockPath is the per-cache lock file, beside its config.
func lockPath(configDir, name string) string {
	return filepath.Join(configDir, "."+name+".lock")
}

// lockCache takes the cache's lock, so that `up`, `down` and a warm into the
// cache's storage never run at once on one cache. When another command holds
// it, lockCache says so on progress and waits (up to lockWait or ctx).
// The lock is an flock: it is released when the process ends, whatever way;
// the file is removed when the holder unlocks.
func lockCache(ctx context.Context, configDir, name string, progress io.Writer) (unlock func(), err error) {
	if err := ensureDir(configDir, "--config-dir"); err != nil {
		return nil, err
	}
	path := lockPath(configDir, name)
	f, err := openLock(path)
	if err != nil {
		return nil, fmt.Errorf("lock cache %s: %w", name, err)
	}
	deadline := time.Now().Add(lockWait)
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// The holder before us removes the file as it unlocks: a lock on a
			// removed file locks nothing, so open the path again.
			if fi, serr := f.Stat(); serr == nil {
				if pi, perr := os.Stat(path); perr == nil && os.SameFile(fi, pi) {
					break
				}
			}
			f.Close()
			if f, err = openLock(path); err != nil {
				return nil, fmt.Errorf("lock cache %s: %w", name, err)
			}
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock cache %s (%s): %w", name, path, err)
		}
		holder := lockHolder(f)
		if !told && progress != nil {
			fmt.Fprintf(progress, "cache %s: waiting for another docker bkcache command on it (%s) to finish\n", name, holder)
			told = true
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("cache %s is busy: another docker bkcache command (%s) has held %s for over %s; wait for it to finish, then run this again", name, holder, path, lockWait)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Name the holder for whoever waits next; the flock, not this text, is the lock.
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		os.Remove(path) // before unlocking, so a waiter sees the file is gone and reopens
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// openLock opens (or creates) the lock file itself, never what a symlink in
// its place points to (the holder truncates and writes it), and refuses
// anything but a regular file there (a named pipe, a device).
func openLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symlink, not bkcache's lock file; remove it and run this again", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w; run as root (sudo) or pass --config-dir", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s is not a regular file (%s), not bkcache's lock file; remove it and run this again", path, st.Mode().Type())
	}
	return f, nil
}

func lockHolder(f *os.File) string {
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, 0)
	if pid := strings.TrimSpace(string(buf[:n])); pid != "" {
		return "pid " + pid
	}
	return "pid unknown"
}
