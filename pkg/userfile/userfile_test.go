package userfile

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

func TestRead(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(regular, []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxBytes+1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want, err string }{
		{path: regular, want: "a: 1\n"},
		{path: link, want: "a: 1\n"},
		{path: fifo, err: "is a named pipe, not a regular file"},
		{path: "/dev/zero", err: "is a character device, not a regular file"},
		{path: dir, err: "is a directory"},
		{path: big, err: "over the 64 MiB"},
		{path: filepath.Join(dir, "missing"), err: "no such file"},
	} {
		// A named pipe with no writer would block open(2) for ever: bound the wait.
		done := make(chan struct{})
		var got []byte
		var err error
		go func() { got, err = Read(tc.path); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("Read(%s) still blocked after 20 s", tc.path)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Read(%s) = %d bytes, %v; want error %q", tc.path, len(got), err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("Read(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
}

// A read of standard input that blocks (a pipe nobody writes to) ends with
// the context, and standard input is bounded too.
func TestReadStdin(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := ReadStdin(ctx, r); done <- err }()
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("ReadStdin after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ReadStdin still blocked 20 s after the cancel")
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	if _, err := ReadStdin(context.Background(), zero); err == nil || !strings.Contains(err.Error(), "over the 64 MiB") {
		t.Errorf("ReadStdin(/dev/zero): %v, want the limit", err)
	}
}
