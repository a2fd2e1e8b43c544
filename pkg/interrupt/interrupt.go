// Package interrupt turns SIGINT and SIGTERM into the cancellation of a context,
// so a command unwinds through its deferred clean-ups (temp files, partial
// outputs, helper containers) instead of dying where it stands, and gives the
// exit code shells expect: 128 + the signal (130 for SIGINT, 143 for SIGTERM).
// A second signal ends the process at once, as docker's own CLI does.
package interrupt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Signaled is the cause of a context cancelled by a signal.
type Signaled struct{ Signal syscall.Signal }

func (s Signaled) Error() string { return "interrupted by " + s.Signal.String() }

// ExitCode is what a shell reports for a process ended by this signal.
func (s Signaled) ExitCode() int { return 128 + int(s.Signal) }

// ExitTerminated is the exit code when the work was cancelled from outside
// without a signal of our own to name: off a terminal, the docker CLI closes
// its plugin's socket when it is itself signalled, which there is nearly always
// a SIGTERM (timeout, a service manager, a CI runner). On a terminal, Ctrl-C
// reaches the plugin directly and is named.
const ExitTerminated = 128 + int(syscall.SIGTERM)

// received records the first signal a Context got, apart from its cause: when
// the parent is cancelled first (the docker CLI closes its plugin's socket on
// the same Ctrl-C), the context's cause is the parent's, yet the signal is
// still ours to report.
type received struct {
	sig  syscall.Signal
	done chan struct{} // closed once sig is set
}

type receivedKey struct{}

// signalGrace bounds how long ExitCode waits for a signal that arrives with an
// outside cancellation (both come from one Ctrl-C on a process group).
const signalGrace = time.Second

// Context returns a child of parent that is cancelled with cause Signaled on the
// first SIGINT or SIGTERM. On the second, it writes a line to stderr and exits
// with 128 + the signal without waiting for clean-ups. stop releases the handler.
func Context(parent context.Context, stderr io.Writer) (ctx context.Context, stop func()) {
	rec := &received{done: make(chan struct{})}
	ctx, cancel := context.WithCancelCause(context.WithValue(parent, receivedKey{}, rec))
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		first := true
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				sig, _ := s.(syscall.Signal)
				if first {
					first = false
					rec.sig = sig
					close(rec.done)
					cancel(Signaled{Signal: sig})
					continue
				}
				fmt.Fprintf(stderr, "got a second %s: exiting without cleaning up\n", sig)
				os.Exit(128 + int(sig))
			}
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// ExitCode says how a command that returned err under ctx should end: 0 on
// success, 128 + signal when ctx was interrupted, ExitTerminated when ctx was
// cancelled from outside, 1 for any other error.
func ExitCode(ctx context.Context, err error) int {
	if err == nil {
		return 0 // the work finished before the signal stopped it
	}
	if ctx == nil {
		return 1
	}
	var s Signaled
	if errors.As(context.Cause(ctx), &s) {
		return s.ExitCode()
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		if rec, ok := ctx.Value(receivedKey{}).(*received); ok {
			select {
			case <-rec.done:
				return Signaled{Signal: rec.sig}.ExitCode()
			case <-time.After(signalGrace):
			}
		}
		return ExitTerminated
	}
	return 1
}
