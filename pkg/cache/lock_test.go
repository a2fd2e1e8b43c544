package cache

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The lock file is opened without following a symlink (the holder truncates
// and writes it: a symlink to another file would clobber that file) and must
// be a regular file.
func TestLockRefusesSymlinkAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, lockPath(dir, "bkhub")); err != nil {
		t.Fatal(err)
	}
	if unlock, err := lockCache(context.Background(), dir, "bkhub", io.Discard); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		if err == nil {
			unlock()
		}
		t.Errorf("lock through a symlink: %v; want a refusal", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("the symlink's target was changed to %q", b)
	}

	if err := syscall.Mkfifo(lockPath(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if unlock, err := lockCache(context.Background(), dir, "fifo", io.Discard); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		if err == nil {
			unlock()
		}
		t.Errorf("lock on a named pipe: %v; want a refusal", err)
	}
}

func TestLockCacheWaitsForTheHolder(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockCache(context.Background(), dir, "bkhub", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		released <- time.Now()
		unlock()
	}()
	var said strings.Builder
	// flock is per open file description: a second lockCache in this process waits too.
	unlock2, err := lockCache(context.Background(), dir, "bkhub", &said)
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	unlock2()
	if _, err := os.Stat(lockPath(dir, "bkhub")); !os.IsNotExist(err) {
		t.Errorf("the lock file stays after unlock: %v", err)
	}
	if got.Before(<-released) {
		t.Error("the second lock was granted while the first was held")
	}
	if !strings.Contains(said.String(), "waiting for another docker bkcache command") || !strings.Contains(said.String(), "pid ") {
		t.Errorf("the waiter was not told who holds the lock: %q", said.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	unlock3, _ := lockCache(context.Background(), dir, "bkhub", io.Discard)
	defer unlock3()
	if _, err := lockCache(ctx, dir, "bkhub", io.Discard); err == nil {
		t.Error("a lock held elsewhere was granted")
	}
	if _, err := lockCache(context.Background(), dir, "other", io.Discard); err != nil {
		t.Errorf("another cache's lock: %v", err)
	}
}
