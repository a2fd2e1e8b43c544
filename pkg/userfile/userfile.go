// Package userfile reads the files a user names on the command line (values
// files, manifests, helmfiles): regular files only, and only up to a limit,
// so a named pipe cannot hang a command in open(2) and /dev/zero cannot fill
// the memory. Standard input is read until the limit or an interrupt.
package userfile

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// MaxBytes bounds one input file: far over any values file, helmfile or
// rendered release, well under what would strain a workstation.
const MaxBytes = 64 << 20

// Check says whether path names a regular file (after symlinks) of at most
// MaxBytes, for inputs another library reads itself (helm's values files).
func Check(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkInfo(path, st)
}

func checkInfo(path string, st fs.FileInfo) error {
	switch m := st.Mode(); {
	case m.IsDir():
		return fmt.Errorf("%s is a directory; give a file", path)
	case !m.IsRegular():
		return fmt.Errorf("%s is %s, not a regular file; copy its contents to a file first", path, Describe(m))
	case st.Size() > MaxBytes:
		return fmt.Errorf("%s is %d bytes, over the %d MiB an input file may have", path, st.Size(), MaxBytes>>20)
	}
	return nil
}

// Describe names the kind of file a mode says, with its article ("a named
// pipe"), for messages that refuse it.
func Describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return "a special file"
}

// Read reads a regular file of at most MaxBytes. It opens with O_NONBLOCK, so
// a file swapped for a named pipe after the check cannot block the open, and
// checks the opened file again.
func Read(path string) ([]byte, error) {
	if err := Check(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkInfo(path, st); err != nil {
		return nil, err
	}
	return readLimited(f, path)
}

// ReadStdin reads r (standard input) up to MaxBytes. It returns when ctx ends
// even if a read blocks (a terminal or a pipe nobody writes to); the blocked
// read is left to the process's exit.
func ReadStdin(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := readLimited(r, "standard input")
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		return res.b, res.err
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func readLimited(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%s holds over the %d MiB an input may have", what, MaxBytes>>20)
	}
	return b, nil
}
