// Package clustertest gives end-to-end tests a real Kubernetes: the one scripts/cluster builds
// and runs on this machine (loopback only), with one node or several.
//
// Tests that use it carry the build tag `cluster` and start with
//
//	func TestMain(m *testing.M) { clustertest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		env := clustertest.Get(t) // env.Kubeconfig, env.NodeName, env.NodeImage, ...
//	}
//
// Main brings the cluster up once per test binary with `scripts/cluster up --nodes N` (N from
// BKCACHE_CLUSTER_NODES, default DefaultNodes). If a cluster is already up it is reused and left running; one that Main started is stopped with
// `scripts/cluster down` when the package's tests end (set BKCACHE_CLUSTER_KEEP=1 to keep it).
// When the cluster cannot start, Main fails the package loudly: it never skips.
//
// Several test binaries (go test ./...) may share one cluster: each holds a shared lock on
// <state dir>.users.lock while it runs, and the binary that started the cluster waits for the
// others to finish before it stops it.
//
// A cold `scripts/cluster up` builds Kubernetes (~15 min on 2 cores). The go command kills a
// test binary after -timeout plus one minute, so run `scripts/cluster up` first or pass a
// larger -timeout (e.g. -timeout 45m).
package clustertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// DefaultNodes is how many nodes Main starts when it starts the cluster: enough for the
// tests that need several nodes (NeedNodes); the others pin themselves to the first node.
const DefaultNodes = 3

// Env describes the running cluster: the values `scripts/cluster env` prints. The first
// fields are about the first node, the one single-node tests use.
type Env struct {
	Kubeconfig       string // KUBECONFIG: admin (system:masters) kubeconfig
	NodeName         string // NODE_NAME: the first node; resolves to 127.0.0.1
	ContainerdSock   string // CONTAINERD_SOCK: the first node's private containerd socket
	ContainerdConfig string // CONTAINERD_CONFIG: that containerd's config.toml, as this machine sees it
	CertsDir         string // CERTS_DIR: its registry config_path (certs.d/<registry>/hosts.toml), as this machine sees it
	NodeCertsDir     string // NODE_CERTS_DIR: the same directory as the node sees it (config_path's value)
	NodeImage        string // NODE_IMAGE: local busybox image; use with imagePullPolicy Never
	StateDir         string // CLUSTER_DIR: the cluster's state directory (logs in StateDir/logs)
	RepoRoot         string // the checkout holding scripts/cluster
	Nodes            []Node // every node, the first one first
	// RestartCommand restarts a node's containerd when run on the node (several nodes only:
	// their containerd has no systemd unit).
	RestartCommand string
}

// Node is one node of the cluster.
type Node struct {
	Name           string // resolves to IP
	IP             string // 127.0.0.x: the kubelet's address
	ContainerdSock string
	// Root holds the node's own copies of /etc/containerd, /etc/docker, /var/lib/bkcache and
	// /run/bkcache-node: the node sees Root+"/etc/containerd/config.toml" as
	// /etc/containerd/config.toml. Empty on a single-node cluster, whose node is this machine.
	Root string
}

// HostPath is where the file the node sees at p lives on this machine.
func (n Node) HostPath(p string) string {
	if n.Root == "" {
		return p
	}
	return filepath.Join(n.Root, p)
}

// NeedNodes fails the test unless the cluster has at least n nodes.
func (e Env) NeedNodes(t testing.TB, n int) {
	t.Helper()
	if len(e.Nodes) < n || e.Nodes[0].Root == "" {
		t.Fatalf("this test needs a cluster of %d nodes with their own files; the running one has %d: "+
			"scripts/cluster down && scripts/cluster up --nodes %d (make e2e does)", n, len(e.Nodes), DefaultNodes)
	}
}

// current is the one piece of package state: Main sets it before any test runs; Get reads it.
var current *Env

// Main runs the package's tests against the cluster and exits; call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

// Get returns the cluster's Env. It fails the test if Main did not run.
func Get(t testing.TB) Env {
	t.Helper()
	if current == nil {
		t.Fatal("clustertest: no cluster: the package needs func TestMain(m *testing.M) { clustertest.Main(m) }")
	}
	return *current
}

func run(m *testing.M) int {
	root, err := RepoRoot()
	if err != nil {
		return fail("%v", err)
	}
	script := filepath.Join(root, "scripts", "cluster")
	env, err := readEnv(script)
	if err != nil {
		return fail("%v", err)
	}
	env.RepoRoot = root

	// Shared while the tests run: the binary that started the cluster stops it only when it
	// can take this lock exclusively, i.e. when no other test binary is using the cluster.
	users, err := flock(env.StateDir+".users.lock", syscall.LOCK_SH)
	if err != nil {
		return fail("%v", err)
	}
	defer users.Close()

	started, err := ensureUp(script, env.StateDir)
	if err != nil {
		return fail("%v", err)
	}
	current = &env
	code := m.Run()

	if started && os.Getenv("BKCACHE_CLUSTER_KEEP") == "" {
		// Trade the shared lock for an exclusive one: wait until the other users are done.
		if err := syscall.Flock(int(users.Fd()), syscall.LOCK_EX); err != nil {
			fmt.Fprintf(os.Stderr, "clustertest: %v: leaving the cluster up\n", err)
			return code
		}
		if err := runScript(script, "down"); err != nil {
			fmt.Fprintf(os.Stderr, "clustertest: FAIL: scripts/cluster down: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// ensureUp starts the cluster unless it is up; it reports whether it started it. The start
// lock makes concurrent test binaries agree on which one started it.
func ensureUp(script, stateDir string) (bool, error) {
	start, err := flock(stateDir+".start.lock", syscall.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer start.Close()
	if exec.Command(script, "status").Run() == nil {
		return false, nil
	}
	n := os.Getenv("BKCACHE_CLUSTER_NODES")
	if n == "" {
		n = strconv.Itoa(DefaultNodes)
	}
	fmt.Fprintf(os.Stderr, "clustertest: starting the cluster: scripts/cluster up --nodes %s (a cold build takes ~15 min)\n", n)
	if err := runScript(script, "up", "--nodes", n); err != nil {
		return false, fmt.Errorf("scripts/cluster up: %w (logs in %s/logs)", err, stateDir)
	}
	return true, nil
}

func fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "clustertest: FAIL: cannot start the Kubernetes cluster for the end-to-end tests: "+format+"\n", args...)
	fmt.Println("FAIL")
	return 1
}

func runScript(script string, args ...string) error {
	cmd := exec.Command(script, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func flock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// readEnv runs `scripts/cluster env` and parses its `export NAME=VALUE` lines.
func readEnv(script string) (Env, error) {
	out, err := exec.Command(script, "env").Output()
	if err != nil {
		return Env{}, fmt.Errorf("%s env: %w", script, err)
	}
	return parseEnv(script, out)
}

// parseEnv reads the output of `scripts/cluster env`.
func parseEnv(script string, out []byte) (Env, error) {
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// One line may export several NAME=VALUE words; values never hold blanks.
		for _, word := range strings.Fields(strings.TrimPrefix(sc.Text(), "export ")) {
			name, value, ok := strings.Cut(word, "=")
			if !ok {
				continue
			}
			if strings.ContainsAny(value, `'"\$`) {
				return Env{}, fmt.Errorf("%s env: %s=%s: quoted values are not supported", script, name, value)
			}
			vars[name] = value
		}
	}
	env := Env{
		Kubeconfig:       vars["KUBECONFIG"],
		NodeName:         vars["NODE_NAME"],
		ContainerdSock:   vars["CONTAINERD_SOCK"],
		ContainerdConfig: vars["CONTAINERD_CONFIG"],
		CertsDir:         vars["CERTS_DIR"],
		NodeImage:        vars["NODE_IMAGE"],
		StateDir:         vars["CLUSTER_DIR"],
		NodeCertsDir:     vars["NODE_CERTS_DIR"],
		RestartCommand:   vars["RESTART_COMMAND"],
	}
	if env.NodeCertsDir == "" { // a scripts/cluster from before several nodes
		env.NodeCertsDir = env.CertsDir
	}
	count, err := strconv.Atoi(vars["NODES"])
	if err != nil || count < 1 {
		count = 1
	}
	for i := 1; i <= count; i++ {
		key := func(k string) string { return fmt.Sprintf("NODE_%d_%s", i, k) }
		n := Node{Name: vars[key("NAME")], IP: vars[key("IP")], ContainerdSock: vars[key("SOCK")], Root: vars[key("ROOT")]}
		if n.Name == "" {
			if i > 1 {
				return Env{}, fmt.Errorf("%s env printed no %s", script, key("NAME"))
			}
			n = Node{Name: env.NodeName, IP: "127.0.0.1", ContainerdSock: env.ContainerdSock}
		}
		env.Nodes = append(env.Nodes, n)
	}
	for name, v := range map[string]string{"KUBECONFIG": env.Kubeconfig, "NODE_NAME": env.NodeName,
		"CONTAINERD_SOCK": env.ContainerdSock, "CONTAINERD_CONFIG": env.ContainerdConfig,
		"CERTS_DIR": env.CertsDir, "NODE_IMAGE": env.NodeImage, "CLUSTER_DIR": env.StateDir} {
		if v == "" {
			return Env{}, fmt.Errorf("%s env printed no %s", script, name)
		}
	}
	return env, nil
}

// RepoRoot finds the checkout holding scripts/cluster, walking up from the working directory
// (a test runs in its package's directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if st, err := os.Stat(filepath.Join(dir, "scripts", "cluster")); err == nil && !st.IsDir() {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no scripts/cluster in the working directory or its parents")
		}
		dir = parent
	}
}
