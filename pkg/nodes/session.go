package nodes

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
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
	req := s.a.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(s.a.Namespace).Name(s.Pod).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: "node", Command: argv, Stdout: true, Stderr: true,
	}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(s.a.Config, "GET", req.URL().String())
	if err != nil {
		return nil, err
	}
	spdy, err := remotecommand.NewSPDYExecutor(s.a.Config, "POST", req.URL())
	if err != nil {
		return nil, err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	var ce utilexec.CodeExitError
	if errors.As(err, &ce) {
		return stdout.Bytes(), &ExitError{Code: ce.Code, Stderr: stderr.String()}
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: exec in pod %s/%s: %w", s.Node, s.a.Namespace, s.Pod, err)
	}
	return stdout.Bytes(), nil
}

// Sh runs a fixed script with positional arguments ($1...): data never becomes shell code.
func (s *Session) Sh(ctx context.Context, script string, args ...string) ([]byte, error) {
	return s.Exec(ctx, append([]string{"sh", "-c", script, "bkcache"}, args...)...)
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

// ReadFile reads a node file. A missing file is (nil, false, nil). The content is checked
// against a sha256 computed on the node.
func (s *Session) ReadFile(ctx context.Context, p string) ([]byte, bool, error) {
	if err := CheckPath(p); err != nil {
		return nil, false, err
	}
	// First line: the node's sha256 of the file; then the file in base64.
	// Symlinks are refused: an absolute link target resolves inside the pod, not on the host,
	// so a file behind one would look missing and be replaced. The chroot check catches a
	// linked parent directory the same way.
	const script = `[ -L "$1" ] && exit 6
if [ ! -e "$1" ]; then chroot /host test -e "$2" 2>/dev/null && exit 7; exit 3; fi
[ -f "$1" ] || exit 4
set -e; sha256sum "$1" | cut -d' ' -f1; base64 "$1"`
	out, err := s.Sh(ctx, script, hostMount+p, p)
	var ee *ExitError
	if errors.As(err, &ee) {
		switch ee.Code {
		case 3:
			return nil, false, nil
		case 4:
			return nil, false, fmt.Errorf("node %s: %s is not a regular file", s.Node, p)
		case 6, 7:
			return nil, false, fmt.Errorf("node %s: %s is reached through a symlink; give the real path (readlink -f on the node), e.g. with --containerd-config", s.Node, p)
		}
		return nil, false, fmt.Errorf("node %s: read %s: %w", s.Node, p, err)
	}
	if err != nil {
		return nil, false, err
	}
	digest, body, _ := strings.Cut(string(out), "\n")
	data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, false, fmt.Errorf("node %s: read %s: bad base64 from the node: %w", s.Node, p, err)
	}
	if strings.TrimSpace(digest) != sum(data) {
		return nil, false, fmt.Errorf("node %s: read %s: content does not match its sha256 on the node (changing while read?); run again", s.Node, p)
	}
	return data, true, nil
}

// WriteFile replaces a node file atomically: a temp file beside it, checked by sha256, then
// renamed over it (an existing file's mode is kept; new files get 0644). The final file is
// read back by digest.
func (s *Session) WriteFile(ctx context.Context, p string, data []byte) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	enc := base64.StdEncoding.EncodeToString(data)
	if len(enc) > maxArg {
		return fmt.Errorf("node %s: %s: %d bytes is too large to send through exec", s.Node, p, len(data))
	}
	want := sum(data)
	const script = `set -e
[ ! -L "$1" ] || { echo "$1 is a symlink" >&2; exit 6; }
t="$1.bkcache-tmp"
printf '%s' "$2" | base64 -d > "$t"
if [ -e "$1" ]; then chmod "$(stat -c %a "$1")" "$t"; else chmod 0644 "$t"; fi
got=$(sha256sum "$t" | cut -d' ' -f1)
if [ "$got" != "$3" ]; then rm -f "$t"; echo "temp file digest $got != $3" >&2; exit 9; fi
sync "$t" 2>/dev/null || sync
mv -f "$t" "$1"
sha256sum "$1" | cut -d' ' -f1`
	out, err := s.Sh(ctx, script, hostMount+p, enc, want)
	if err != nil {
		return fmt.Errorf("node %s: write %s: %w", s.Node, p, err)
	}
	if got := strings.TrimSpace(string(out)); got != want {
		return fmt.Errorf("node %s: write %s: read back sha256 %s, want %s; the file may be damaged: check it or run --revert", s.Node, p, got, want)
	}
	return nil
}

// Remove deletes a node file; a missing one is fine.
func (s *Session) Remove(ctx context.Context, p string) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	if _, err := s.Sh(ctx, `rm -f "$1"`, hostMount+p); err != nil {
		return fmt.Errorf("node %s: remove %s: %w", s.Node, p, err)
	}
	return nil
}

// MkdirAll creates dir and its parents; it returns the directories it created, outermost first.
func (s *Session) MkdirAll(ctx context.Context, dir string) ([]string, error) {
	if err := CheckPath(dir); err != nil {
		return nil, err
	}
	var missing []string
	for d := dir; d != "/"; d = path.Dir(d) {
		missing = append([]string{d}, missing...)
	}
	out, err := s.Sh(ctx, `for d in "$@"; do if [ ! -e "/host$d" ]; then mkdir -m 0755 "/host$d" && echo "$d"; elif [ ! -d "/host$d" ]; then echo "$d is not a directory" >&2; exit 3; fi; done`, missing...)
	if err != nil {
		return nil, fmt.Errorf("node %s: mkdir %s: %w", s.Node, dir, err)
	}
	return lines(out), nil
}

// RemoveDirIfEmpty removes a directory bkcache created, only if nothing else was put into it.
func (s *Session) RemoveDirIfEmpty(ctx context.Context, dir string) (bool, error) {
	if err := CheckPath(dir); err != nil {
		return false, err
	}
	out, err := s.Sh(ctx, `[ -d "$1" ] || exit 0; rmdir "$1" 2>/dev/null && echo removed; exit 0`, hostMount+dir)
	if err != nil {
		return false, fmt.Errorf("node %s: rmdir %s: %w", s.Node, dir, err)
	}
	return strings.TrimSpace(string(out)) == "removed", nil
}

// List names the entries of a node directory (nil when it does not exist).
func (s *Session) List(ctx context.Context, dir string) ([]string, error) {
	if err := CheckPath(dir); err != nil {
		return nil, err
	}
	out, err := s.Sh(ctx, `[ -d "$1" ] || exit 0; cd "$1" && for f in * .*; do case "$f" in .|..) ;; *) [ -e "$f" ] && echo "$f";; esac; done`, hostMount+dir)
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
	if err := CheckPath(from); err != nil {
		return err
	}
	if err := CheckPath(to); err != nil {
		return err
	}
	if _, err := s.Sh(ctx, `mv "$1" "$2"`, hostMount+from, hostMount+to); err != nil {
		return fmt.Errorf("node %s: rename %s: %w", s.Node, from, err)
	}
	return nil
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
