package nodes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// A *Session is a Node: the node's files and commands through exec in its node-access pod.

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("exit status %d: %s", e.Code, strings.TrimSpace(e.Stderr))
}

// Exec runs argv in the pod's container and returns its stdout; a non-zero exit is an *ExitError.
func (s *Session) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	stdout, _, err := s.exec(ctx, argv)
	return stdout, err
}

// exec runs argv in the pod's container. Its stdout and stderr come back also when the
// stream broke (as far as they came).
func (s *Session) exec(ctx context.Context, argv []string) ([]byte, []byte, error) {
	req := s.a.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(s.a.Namespace).Name(s.Pod).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: "node", Command: argv, Stdout: true, Stderr: true,
	}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(s.a.Config, "GET", req.URL().String())
	if err != nil {
		return nil, nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(s.a.Config, "POST", req.URL())
	if err != nil {
		return nil, nil, err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, nil, err
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return stdout.Bytes(), stderr.Bytes(), &ExitError{Code: ce.Code, Stderr: stderr.String()}
	}
	if err != nil {
		return stdout.Bytes(), stderr.Bytes(), fmt.Errorf("node %s: exec in pod %s/%s: %w", s.Node, s.a.Namespace, s.Pod, err)
	}
	return stdout.Bytes(), stderr.Bytes(), nil
}

// CheckPath rejects anything but a clean absolute path without control characters.
func CheckPath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" || strings.ContainsAny(p, "\x00\n\r") {
		return fmt.Errorf("path %q: want a clean absolute path", p)
	}
	return nil
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// one runs a single file operation (a batch of one).
func (s *Session) one(ctx context.Context, op Op) (OpResult, error) {
	res, err := s.Batch(ctx, []Op{op})
	if len(res) == 0 {
		return OpResult{}, batchCause(err)
	}
	return res[0], batchCause(err)
}

// ReadFile reads a node file. A missing file is (nil, false, nil). The content travels in
// base64 with a sha256 computed on the node, and is checked against it. Symlinks are refused:
// an absolute link target resolves inside the pod, not on the host, so a file behind one
// would look missing and be replaced; a check in the host's root (chroot) catches a linked
// parent directory the same way.
func (s *Session) ReadFile(ctx context.Context, p string) ([]byte, bool, error) {
	r, err := s.one(ctx, Op{Kind: OpRead, Path: p})
	return r.Data, r.Exists, err
}

// WriteFile replaces a node file atomically: a temp file beside it, checked by sha256, then
// renamed over it (an existing file's mode is kept; new files get 0644). The final file is
// read back by digest.
func (s *Session) WriteFile(ctx context.Context, p string, data []byte) error {
	_, err := s.one(ctx, Op{Kind: OpWrite, Path: p, Data: data})
	return err
}

// Remove deletes a node file; a missing one is fine.
func (s *Session) Remove(ctx context.Context, p string) error {
	_, err := s.one(ctx, Op{Kind: OpRemove, Path: p})
	return err
}

// MkdirAll creates dir and its parents; it returns the directories it created, outermost first.
func (s *Session) MkdirAll(ctx context.Context, dir string) ([]string, error) {
	r, err := s.one(ctx, Op{Kind: OpMkdir, Path: dir})
	return r.Created, err
}

// RemoveDirIfEmpty removes a directory bkcache created, only if nothing else was put into it.
func (s *Session) RemoveDirIfEmpty(ctx context.Context, dir string) (bool, error) {
	r, err := s.one(ctx, Op{Kind: OpRmdir, Path: dir})
	return r.Removed, err
}

// List names the entries of a node directory (nil when it does not exist).
func (s *Session) List(ctx context.Context, dir string) ([]string, error) {
	if err := CheckPath(dir); err != nil {
		return nil, err
	}
	out, err := s.Exec(ctx, "sh", "-c", `[ -d "$1" ] || exit 0; cd "$1" && for f in * .*; do case "$f" in .|..) ;; *) [ -e "$f" ] && echo "$f";; esac; done`, "bkcache", hostMount+dir)
	if err != nil {
		return nil, fmt.Errorf("node %s: list %s: %w", s.Node, dir, err)
	}
	return lines(out), nil
}

func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Name is the node's name.
func (s *Session) Name() string { return s.Node }

// Rename moves a node file or directory.
func (s *Session) Rename(ctx context.Context, from, to string) error {
	_, err := s.one(ctx, Op{Kind: OpRename, Path: from, To: to})
	return err
}

// RestartContainerd runs command on the host (chroot) and waits until the CRI answers again:
// an exec into this pod goes kubelet -> CRI -> containerd, so its success is the proof.
func (s *Session) RestartContainerd(ctx context.Context, command string) (time.Duration, error) {
	start := time.Now()
	_, err := s.Exec(ctx, "chroot", hostMount, "sh", "-c", command)
	if nr := notRun(err, s.Node, command, "--restart-command"); nr != nil {
		return 0, nr
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return 0, fmt.Errorf("node %s: the restart command %q failed (%w): check containerd on the node (journalctl -u containerd), or give the right command with --restart-command", s.Node, command, err)
	}
	// Any other error is the exec stream dropping while containerd went down: expected.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = wait.PollUntilContextCancel(wctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := s.Exec(ctx, "true")
		return err == nil, nil
	})
	if err != nil {
		return 0, fmt.Errorf("node %s: the CRI did not answer within 2m after %q: check containerd on the node (journalctl -u containerd)", s.Node, command)
	}
	return time.Since(start), nil
}

// RunOnHost runs command with the host's root (chroot /host sh -c): it is a fixed command line
// from a flag or a constant, never built from node data.
func (s *Session) RunOnHost(ctx context.Context, command string) ([]byte, error) {
	out, err := s.Exec(ctx, "chroot", hostMount, "sh", "-c", command)
	var ee *ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, err
	}
	return out, err
}
