package nodes

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is what the mirror logic needs of a node: its files, a containerd restart and host
// commands (docker reload). A *Session provides it through the API; tests use an in-memory
// node and this machine.
type Node interface {
	Name() string
	ReadFile(ctx context.Context, p string) ([]byte, bool, error)
	WriteFile(ctx context.Context, p string, data []byte) error
	Remove(ctx context.Context, p string) error
	// MkdirAll creates dir and its parents and returns the ones it created, outermost first.
	MkdirAll(ctx context.Context, dir string) ([]string, error)
	// RemoveDirIfEmpty removes dir when nothing is in it and says whether it did.
	RemoveDirIfEmpty(ctx context.Context, dir string) (bool, error)
	List(ctx context.Context, dir string) ([]string, error)
	Rename(ctx context.Context, from, to string) error
	RestartContainerd(ctx context.Context, command string) (time.Duration, error)
	// RunOnHost runs a fixed command line in the host's root (chroot) and returns its stdout;
	// a non-zero exit is an *ExitError.
	RunOnHost(ctx context.Context, command string) ([]byte, error)
	// Close ends the access to the node (deletes its pod); it runs also after a cancel.
	Close(ctx context.Context) error
}

// NodeAccess opens nodes and makes their kubelet pull: *Access through the Kubernetes API.
type NodeAccess interface {
	// Open reaches node's files. An error means nothing on the node was read.
	Open(ctx context.Context, node *corev1.Node) (Node, AccessImage, error)
	VerifyPull(ctx context.Context, node, image string) PullResult
}

// CommandNotRunError is a restart or reload command the node's shell could not run at all
// (exit 126 or 127: not found, not executable): nothing was restarted or reloaded.
type CommandNotRunError struct {
	Node    string
	Command string
	Flag    string // the flag that sets the command
	Err     *ExitError
}

func (e *CommandNotRunError) Error() string {
	return fmt.Sprintf("node %s: the command %q could not run (%v): nothing was restarted; give the right command with %s", e.Node, e.Command, e.Err, e.Flag)
}

func (e *CommandNotRunError) Unwrap() error { return e.Err }

// notRun makes err a *CommandNotRunError when the shell could not run the command.
func notRun(err error, node, command, flag string) error {
	var ee *ExitError
	if errors.As(err, &ee) && (ee.Code == 126 || ee.Code == 127) {
		return &CommandNotRunError{Node: node, Command: command, Flag: flag, Err: ee}
	}
	return nil
}

func commandNotRun(err error) bool {
	var e *CommandNotRunError
	return errors.As(err, &e)
}

// SelectNodes lists the nodes a run works on.
func SelectNodes(ctx context.Context, o MirrorOptions) ([]corev1.Node, error) {
	list, err := o.Access.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return pickNodes(list.Items, o.Nodes, o.Selector)
}

// pickNodes keeps the named nodes of list, in the order named (all of them when none is named).
func pickNodes(list []corev1.Node, names []string, selector string) ([]corev1.Node, error) {
	if len(names) == 0 {
		if len(list) == 0 {
			return nil, fmt.Errorf("no nodes match selector %q", selector)
		}
		return list, nil
	}
	var out []corev1.Node
	for _, name := range names {
		i := slices.IndexFunc(list, func(n corev1.Node) bool { return n.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("node %q not found (or not matching selector %q); see kubectl get nodes", name, selector)
		}
		out = append(out, list[i])
	}
	return out, nil
}

// prepare selects the nodes and removes node-access pods a killed run left behind (an hour
// is longer than any run).
func prepare(ctx context.Context, o MirrorOptions) ([]corev1.Node, error) {
	nodes, err := SelectNodes(ctx, o)
	if err != nil {
		return nil, err
	}
	_, _ = o.Access.CleanupLeftovers(ctx, time.Hour)
	return nodes, nil
}

// Mirror configures (or with Revert, restores) containerd or dockerd on every selected node,
// in parallel, and returns one report per node in node order. An error means nothing ran
// (bad options, nodes not listable); per-node outcomes are in the reports.
func Mirror(ctx context.Context, o MirrorOptions) ([]NodeReport, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	if !o.Revert {
		if err := o.checkTarget(); err != nil {
			return nil, err
		}
	}
	nodes, err := prepare(ctx, o)
	if err != nil {
		return nil, err
	}
	return mirror(ctx, o, nodes, &o.Access), nil
}

func mirror(ctx context.Context, o MirrorOptions, nodes []corev1.Node, access NodeAccess) []NodeReport {
	return forEachNode(ctx, o, nodes, access, func(ctx context.Context, _ int, n Node, r *NodeReport) error {
		if o.Revert {
			return revertNode(ctx, o, n, r)
		}
		return applyNode(ctx, o, n, r, access)
	})
}

// forEachNode opens each node (o.Parallel at once, o.NodeTimeout each) and runs fn on it.
// Nodes that are not Ready or cannot be opened are reported unreachable and fn never sees
// them; runtimes other than containerd and docker are skipped.
func forEachNode(ctx context.Context, o MirrorOptions, nodes []corev1.Node, access NodeAccess, fn func(ctx context.Context, i int, n Node, r *NodeReport) error) []NodeReport {
	reports := make([]NodeReport, len(nodes))
	g := new(errgroup.Group)
	g.SetLimit(o.Parallel)
	for i := range nodes {
		g.Go(func() error {
			start := time.Now()
			r := &reports[i]
			runNode(ctx, o, &nodes[i], access, r, func(ctx context.Context, n Node) error { return fn(ctx, i, n, r) })
			r.Seconds = time.Since(start).Seconds()
			return nil
		})
	}
	_ = g.Wait()
	return reports
}

func runNode(ctx context.Context, o MirrorOptions, node *corev1.Node, access NodeAccess, r *NodeReport, fn func(context.Context, Node) error) {
	r.Node, r.Runtime = node.Name, node.Status.NodeInfo.ContainerRuntimeVersion
	if !strings.HasPrefix(r.Runtime, "containerd://") && !isDocker(r.Runtime) {
		r.Status = StateSkipped
		r.Warnings = append(r.Warnings, fmt.Sprintf("runtime %q: only containerd and docker are supported", r.Runtime))
		return
	}
	if !nodeReady(node) {
		r.Status, r.Error = StateUnreachable, "node is NotReady: not touched; run again when it is Ready"
		return
	}
	nctx, cancel := context.WithTimeout(ctx, o.NodeTimeout)
	defer cancel()
	n, img, err := access.Open(nctx, node)
	if img.Image != "" {
		r.AccessImage = &img
	}
	if err != nil {
		r.Status, r.Error = StateUnreachable, err.Error()
		return
	}
	defer func() {
		if err := n.Close(nctx); err != nil {
			r.Warnings = append(r.Warnings, err.Error())
		}
	}()
	if err := fn(nctx, n); err != nil {
		r.Status, r.Error = StateFailed, err.Error()
		if ctx.Err() == nil && nctx.Err() != nil {
			r.Error += fmt.Sprintf(" (--node-timeout %s reached)", o.NodeTimeout)
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (o MirrorOptions) progress(node, format string, args ...any) {
	o.Access.progress(node, format, args...)
}
