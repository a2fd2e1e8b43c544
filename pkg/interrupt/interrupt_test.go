package interrupt

import (
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
)

// One Ctrl-C on a process group reaches the docker CLI and the plugin at
// once; the CLI then closes its plugin's socket, which cancels the parent
// context, and that may happen before the plugin's own handler runs. The exit
// code must still name the signal the plugin got: 130, not 143.
func TestSignalAfterParentCancelled(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, stop := Context(parent, io.Discard)
	defer stop()
	cancelParent() // the socket closed first
	<-ctx.Done()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := ExitCode(ctx, context.Canceled); code != 130 {
		t.Errorf("exit code %d after SIGINT behind an outside cancel, want 130", code)
	}
}

func TestExitCode(t *testing.T) {
	if code := ExitCode(context.Background(), nil); code != 0 {
		t.Errorf("success: %d, want 0", code)
	}
	if code := ExitCode(context.Background(), errors.New("boom")); code != 1 {
		t.Errorf("failure: %d, want 1", code)
	}

	// Cancelled from outside, no signal of ours: SIGTERM's code.
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, stop := Context(parent, io.Discard)
	cancelParent()
	if code := ExitCode(ctx, context.Canceled); code != ExitTerminated {
		t.Errorf("outside cancel: %d, want %d", code, ExitTerminated)
	}
	stop()

	// Our own SIGTERM first.
	ctx, stop = Context(context.Background(), io.Discard)
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	if code := ExitCode(ctx, context.Canceled); code != 143 {
		t.Errorf("SIGTERM: %d, want 143", code)
	}
	var s Signaled
	if !errors.As(context.Cause(ctx), &s) || s.Signal != syscall.SIGTERM {
		t.Errorf("cause %v, want Signaled{SIGTERM}", context.Cause(ctx))
	}
}
