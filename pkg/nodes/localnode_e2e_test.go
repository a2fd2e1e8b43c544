//go:build e2e

package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/containerdtest"
)

// localNode is this machine as a Node, running its own containerd (ctrd; nil
// for a Docker-runtime node).
type localNode struct {
	t       *testing.T
	dir     string
	config  string
	sock    string
	ctrd    *containerdtest.Containerd
	hostEnv []string // set: RunOnHost runs host commands with it
}

func (n *localNode) Name() string { return "local" }
func (n *localNode) ReadFile(_ context.Context, p string) ([]byte, bool, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	return b, err == nil, err
}
func (n *localNode) WriteFile(_ context.Context, p string, data []byte) error {
	mode := os.FileMode(0o644)
	if st, err := os.Stat(p); err == nil {
		mode = st.Mode().Perm()
	}
	tmp := p + ".bkcache-tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
func (n *localNode) Remove(_ context.Context, p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
func (n *localNode) MkdirAll(_ context.Context, dir string) ([]string, error) {
	var created []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			created = append([]string{d}, created...)
		}
	}
	return created, os.MkdirAll(dir, 0o755)
}
func (n *localNode) RemoveDirIfEmpty(_ context.Context, dir string) (bool, error) {
	return os.Remove(dir) == nil, nil // fails when not empty: kept, as wanted
}
func (n *localNode) Close(context.Context) error { return nil }
func (n *localNode) List(_ context.Context, dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out, err
}
func (n *localNode) Rename(_ context.Context, from, to string) error { return os.Rename(from, to) }

func (n *localNode) ctr(args ...string) (string, error) { return n.ctrd.Ctr(args...) }

// RunOnHost runs command on this machine with hostEnv (a Docker-runtime test points
// DOCKER_HOST at its own dockerd); a node without hostEnv runs containerd only.
func (n *localNode) RunOnHost(ctx context.Context, command string) ([]byte, error) {
	if n.hostEnv == nil {
		return nil, fmt.Errorf("localNode: unexpected host command %q", command)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Env = append(os.Environ(), n.hostEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, &ExitError{Code: ee.ExitCode(), Stderr: stderr.String()}
	}
	return out, err
}

// RestartContainerd restarts the test's containerd and waits until it answers.
func (n *localNode) RestartContainerd(context.Context, string) (time.Duration, error) {
	start := time.Now()
	if err := n.ctrd.Restart(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
