package front

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

type childKind string

const (
	proxyChild childKind = "proxy"
	localChild childKind = "local"
)

// Child states as /bkcache/status shows them.
const (
	childRunning  = "running"
	childStarting = "starting"
	childStopped  = "stopped"
)

// child is one registry:2 process on a unix socket in the run dir.
type child struct {
	kind   childKind
	bin    string
	config string // path of its config
	sock   string
	log    *lineLog
	logf   func(format string, args ...any)

	// transport reaches the child over its socket.
	transport *http.Transport

	mu    sync.Mutex
	state string
	ready chan struct{} // closed while running; replaced when it stops
}

func newChild(kind childKind, bin, runDir string, log *lineLog, logf func(string, ...any)) *child {
	sock := filepath.Join(runDir, string(kind)+".sock")
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &child{
		kind: kind, bin: bin, sock: sock, log: log, logf: logf,
		config: filepath.Join(runDir, string(kind)+".yml"),
		state:  childStopped,
		ready:  make(chan struct{}),
		transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", sock)
			},
			DisableCompression:  true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// State is running, starting or stopped.
func (c *child) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

func (c *child) setState(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s == c.state {
		return
	}
	if s == childRunning {
		close(c.ready)
	} else if c.state == childRunning {
		c.ready = make(chan struct{})
	}
	c.state = s
}

// waitReady waits until the child runs, at most d.
func (c *child) waitReady(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ready:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// supervise runs the child whenever allowed() says so, restarting it with
// backoff when it exits, until ctx ends; then it stops the child. wake
// returns a channel closed when allowed() may have changed (nil: never).
func (c *child) supervise(ctx context.Context, allowed func() bool, wake func() <-chan struct{}) {
	pause := time.Second
	for ctx.Err() == nil {
		var woken <-chan struct{}
		if wake != nil {
			woken = wake() // before asking allowed(): no change slips between
		}
		if !allowed() {
			select {
			case <-woken:
			case <-ctx.Done():
			}
			continue
		}
		started := time.Now()
		err := c.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > time.Minute {
			pause = time.Second // it ran well: a fresh failure starts the backoff again
		}
		c.logf("registry %s child exited (%v); restarting in %s", c.kind, err, pause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
		pause = min(pause*2, 30*time.Second)
	}
}

// run starts the child, waits until it answers on its socket, and returns
// when it exits; when ctx ends it stops the child (SIGTERM, then SIGKILL).
func (c *child) run(ctx context.Context) error {
	c.setState(childStarting)
	defer c.setState(childStopped)
	if err := os.Remove(c.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", c.sock, err)
	}
	cmd := exec.Command(c.bin, "serve", c.config)
	out := c.log.writer("registry-" + string(c.kind) + ": ")
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// The child dies with the front, even if the front is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	readyCtx, cancel := context.WithCancel(ctx)
	go func() {
		if c.ping(readyCtx, 60*time.Second) {
			c.setState(childRunning)
		}
	}()
	defer cancel()
	select {
	case err := <-exited:
		return fmt.Errorf("registry %s child: %w", c.kind, err)
	case <-ctx.Done():
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may be gone already
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill() //nolint:errcheck
			<-exited
		}
		return ctx.Err()
	}
}

// ping waits until the child answers GET /v2/ on its socket.
func (c *child) ping(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	client := &http.Client{Transport: c.transport, Timeout: 2 * time.Second}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://registry-"+string(c.kind)+"/v2/", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return true
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return false
}

// lineLog writes whole lines from several sources into one writer without
// interleaving them.
type lineLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineLog) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s) //nolint:errcheck // nowhere to report a log failure
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.line(string(p))
	return len(p), nil
}

// writer returns a pipe whose lines reach the log with prefix; Close it to
// flush the last line.
func (l *lineLog) writer(prefix string) io.WriteCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.line(prefix + sc.Text() + "\n")
		}
		io.Copy(io.Discard, pr) //nolint:errcheck // drain an over-long line
	}()
	return &pipeCloser{pw: pw, done: done}
}

type pipeCloser struct {
	pw   *io.PipeWriter
	done chan struct{}
}

func (p *pipeCloser) Write(b []byte) (int, error) { return p.pw.Write(b) }
func (p *pipeCloser) Close() error {
	p.pw.Close()
	<-p.done
	return nil
}
