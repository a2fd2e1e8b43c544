package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// fakeEngine keeps containers in memory and records what Up asked of it.
type fakeEngine struct {
	mu         sync.Mutex
	containers map[string]*container.InspectResponse
	calls      []string
	nextID     int
	listed     []container.Summary // what ContainerList answers
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{containers: map[string]*container.InspectResponse{}}
}

func (f *fakeEngine) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeEngine) changes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if !strings.HasPrefix(c, "inspect") && !strings.HasPrefix(c, "list") && c != "ping" && !strings.HasPrefix(c, "image") {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeEngine) Ping(context.Context, client.PingOptions) (client.PingResult, error) {
	f.record("ping")
	return client.PingResult{}, nil
}

// DaemonHost is not a unix socket, so Up does not probe this host's ports.
func (f *fakeEngine) DaemonHost() string { return "tcp://fake-engine:2375" }

func (f *fakeEngine) ImageInspect(_ context.Context, image string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	f.record("image-inspect " + image)
	return client.ImageInspectResult{}, nil
}

func (f *fakeEngine) ImagePull(context.Context, string, client.ImagePullOptions) (client.ImagePullResponse, error) {
	return nil, fmt.Errorf("the fake engine pulls nothing")
}

func (f *fakeEngine) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	f.record("list")
	return client.ContainerListResult{Items: f.listed}, nil
}

func (f *fakeEngine) ContainerInspect(_ context.Context, name string, _ client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	f.record("inspect " + name)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return client.ContainerInspectResult{}, fmt.Errorf("no such container %s: %w", name, cerrdefs.ErrNotFound)
	}
	return client.ContainerInspectResult{Container: *c}, nil
}

func (f *fakeEngine) ContainerCreate(_ context.Context, o client.ContainerCreateOptions) (client.ContainerCreateResult, error) {
	f.record("create " + o.Name)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	c := &container.InspectResponse{ID: strconv.Itoa(f.nextID), Name: "/" + o.Name, Config: o.Config, HostConfig: o.HostConfig,
		State: &container.State{Status: container.StateCreated}}
	for _, b := range o.HostConfig.Binds {
		parts := strings.Split(b, ":")
		c.Mounts = append(c.Mounts, container.MountPoint{Source: parts[0], Destination: parts[1]})
	}
	f.containers[o.Name] = c
	return client.ContainerCreateResult{ID: c.ID}, nil
}

func (f *fakeEngine) ContainerStart(_ context.Context, name string, _ client.ContainerStartOptions) (client.ContainerStartResult, error) {
	f.record("start " + name)
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return client.ContainerStartResult{}, cerrdefs.ErrNotFound
	}
	c.State = &container.State{Running: true, Status: container.StateRunning}
	return client.ContainerStartResult{}, nil
}

func (f *fakeEngine) ContainerStop(_ context.Context, name string, _ client.ContainerStopOptions) (client.ContainerStopResult, error) {
	f.record("stop " + name)
	return client.ContainerStopResult{}, nil
}

func (f *fakeEngine) ContainerRemove(_ context.Context, name string, _ client.ContainerRemoveOptions) (client.ContainerRemoveResult, error) {
	f.record("remove " + name)
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, name)
	return client.ContainerRemoveResult{}, nil
}

func (f *fakeEngine) ContainerLogs(context.Context, string, client.ContainerLogsOptions) (client.ContainerLogsResult, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

func (f *fakeEngine) CopyFromContainer(_ context.Context, id string, o client.CopyFromContainerOptions) (client.CopyFromContainerResult, error) {
	return client.CopyFromContainerResult{}, fmt.Errorf("no such file %s in container %s", o.SourcePath, id)
}

// writeELF writes a minimal x86-64 ELF header; with interp it has a PT_INTERP
// program header, as a dynamically linked binary does.
func writeELF(t *testing.T, path string, interp bool) {
	t.Helper()
	var b bytes.Buffer
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	le := binary.LittleEndian
	phnum, phoff := uint16(0), uint64(0)
	if interp {
		phnum, phoff = 1, 64
	}
	for _, v := range []any{uint16(2), uint16(0x3e), uint32(1), uint64(0x401000), phoff, uint64(0), uint32(0),
		uint16(64), uint16(56), phnum, uint16(64), uint16(0), uint16(0)} {
		binary.Write(&b, le, v)
	}
	if interp {
		for _, v := range []any{uint32(3), uint32(4), uint64(120), uint64(0), uint64(0), uint64(28), uint64(28), uint64(1)} {
			binary.Write(&b, le, v)
		}
		b.WriteString("/lib64/ld-linux-x86-64.so.2\x00")
	}
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
}

// cacheServer plays the front (or registry:2) on the cache's port, the
// front's status included, and a metrics listener that answers nothing.
type cacheServer struct {
	port, metricsPort int
	mode              string
}

func startCacheServer(t *testing.T, mode string) *cacheServer {
	t.Helper()
	cs := &cacheServer{mode: mode}
	cache := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/":
			w.WriteHeader(http.StatusOK)
		case "/bkcache/status":
			json.NewEncoder(w).Encode(FrontStatus{Layout: LayoutFront, Mode: cs.mode, Since: time.Now().Format(time.RFC3339)})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(cache.Close)
	// The metrics listener knows nothing: the CLI reads the cache's port.
	metrics := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(metrics.Close)
	cs.port = cache.Listener.Addr().(*net.TCPAddr).Port
	cs.metricsPort = metrics.Listener.Addr().(*net.TCPAddr).Port
	return cs
}

type upFixture struct {
	eng          *fakeEngine
	spec         Spec
	static       string
	dynamic      string
	upstream     string
	unreachable  string
	server       *cacheServer
	configDir    string
	progress     bytes.Buffer
	frontBinPath string
}

func newUpFixture(t *testing.T, mode string) *upFixture {
	t.Helper()
	dir := t.TempDir()
	f := &upFixture{eng: newFakeEngine(), server: startCacheServer(t, mode), configDir: filepath.Join(dir, "etc")}
	f.static, f.dynamic = filepath.Join(dir, "static"), filepath.Join(dir, "dynamic")
	writeELF(t, f.static, false)
	writeELF(t, f.dynamic, true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	t.Cleanup(up.Close)
	f.upstream = up.URL
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	f.unreachable = "http://" + dead.Addr().String()
	dead.Close()
	f.spec = Spec{Name: "fake", Upstream: f.upstream, Port: f.server.port, MetricsPort: f.server.metricsPort, Network: NetworkHost,
		ConfigDir: f.configDir, DataDir: filepath.Join(dir, "data"), Image: "bkcache.local/registry:2"}
	f.frontBinPath = filepath.Join(f.configDir, "fake.front")
	return f
}

func (f *upFixture) up(t *testing.T, spec Spec, binary string, opts ...func(*UpOptions)) (UpResult, error) {
	t.Helper()
	o := UpOptions{Wait: 5 * time.Second, FrontBinary: binary, Progress: &f.progress}
	for _, fn := range opts {
		fn(&o)
	}
	return Up(context.Background(), f.eng, spec, o)
}

func TestUpCreatesFrontThenChangesNothing(t *testing.T) {
	f := newUpFixture(t, ModeOnline)
	res, err := f.up(t, f.spec, f.static)
	if err != nil {
		t.Fatalf("up: %v\n%s", err, f.progress.String())
	}
	want(t, "action", res.Action, ActionCreated)
	want(t, "layout", res.Layout, LayoutFront)
	want(t, "mode", res.Mode, ModeOnline)
	want(t, "warning", res.Warning, "")
	want(t, "engine changes", strings.Join(f.eng.changes(), ", "), "create proxy-fake, start proxy-fake")

	c := f.eng.containers["proxy-fake"]
	want(t, "layout label", c.Config.Labels[LabelLayout], LayoutFront)
	want(t, "entrypoint", strings.Join(c.Config.Entrypoint, " "), "/bkcache/docker-bkcache front --registry-config /etc/docker/registry/config.yml --listen :"+itoa(f.server.port)+" --metrics-listen 127.0.0.1:"+itoa(f.server.metricsPort)+" --upstream-rate 0")
	if !slices.Contains(c.HostConfig.Binds, f.frontBinPath+":/bkcache/docker-bkcache:ro") {
		t.Errorf("the front's binary is not mounted read-only: %v", c.HostConfig.Binds)
	}
	want(t, "tmpfs", c.HostConfig.Tmpfs["/run/bkcache"], "rw,mode=0700,size=16m")
	copied, err := os.ReadFile(f.frontBinPath)
	orig, _ := os.ReadFile(f.static)
	if err != nil || !bytes.Equal(copied, orig) {
		t.Fatalf("the plugin's binary was not copied to %s: %v", f.frontBinPath, err)
	}
	if info, _ := os.Stat(f.frontBinPath); info.Mode().Perm() != 0o755 {
		t.Errorf("%s has mode %v, want 0755", f.frontBinPath, info.Mode().Perm())
	}
	if info, _ := os.Stat(f.spec.WithDefaults().ConfigPath()); info.Mode().Perm() != 0o600 {
		t.Errorf("config has mode %v, want 0600", info.Mode().Perm())
	}

	f.eng.calls = nil
	again, err := f.up(t, f.spec, f.static)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "second action", again.Action, ActionUnchanged)
	want(t, "second engine changes", strings.Join(f.eng.changes(), ", "), "")

	// A new plugin version recreates the container, keeping the data dir.
	newer := filepath.Join(t.TempDir(), "newer")
	writeELF(t, newer, false)
	os.WriteFile(newer, append(orig, 0), 0o755)
	f.eng.calls = nil
	upgraded, err := f.up(t, f.spec, newer)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "upgrade action", upgraded.Action, ActionRecreated)
	if len(upgraded.Changes) != 1 || !strings.HasPrefix(upgraded.Changes[0], "front binary: ") {
		t.Errorf("upgrade changes = %v, want the front binary named", upgraded.Changes)
	}
	want(t, "upgrade engine changes", strings.Join(f.eng.changes(), ", "), "remove proxy-fake, create proxy-fake, start proxy-fake")
}

func TestUpConvertsBetweenLayoutsKeepingData(t *testing.T) {
	f := newUpFixture(t, ModeOnline)
	plain := f.spec
	plain.Layout = LayoutPlain
	if _, err := f.up(t, plain, ""); err != nil {
		t.Fatalf("up --plain: %v", err)
	}
	c := f.eng.containers["proxy-fake"]
	if len(c.Config.Entrypoint) != 0 || len(c.HostConfig.Tmpfs) != 0 {
		t.Errorf("the plain layout changes the image's entrypoint or mounts a tmpfs: %v %v", c.Config.Entrypoint, c.HostConfig.Tmpfs)
	}
	want(t, "plain label", c.Config.Labels[LabelLayout], LayoutPlain)
	if _, err := os.Stat(f.frontBinPath); err == nil {
		t.Errorf("--plain copied the front's binary")
	}

	// The next up without --plain converts; a user who gave no --data-dir keeps the data where it is.
	noData := f.spec
	noData.DataDir = ""
	res, err := f.up(t, noData, f.static)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "action", res.Action, ActionConverted)
	want(t, "changes", strings.Join(res.Changes, "; "), "converted: plain -> front")
	want(t, "data dir kept", res.DataDir, f.spec.DataDir)
}

func TestUpRefusesADynamicBinaryBeforeChangingAnything(t *testing.T) {
	f := newUpFixture(t, ModeOnline)
	_, err := f.up(t, f.spec, f.dynamic)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("a dynamically linked binary was not refused with advice: %v", err)
	}
	want(t, "engine changes", strings.Join(f.eng.changes(), ", "), "")
	if _, err := os.Stat(f.configDir); err == nil {
		t.Errorf("a refused up wrote into %s", f.configDir)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if _, err := f.up(t, f.spec, notELF); err == nil || !strings.Contains(err.Error(), "--plain") {
		t.Errorf("a binary that is not ELF was not refused: %v", err)
	}
}

func TestUpWithUnreachableUpstream(t *testing.T) {
	f := newUpFixture(t, ModeOffline)
	spec := f.spec
	spec.Upstream = f.unreachable
	res, err := f.up(t, spec, f.static)
	if err != nil {
		t.Fatalf("the front layout refused an unreachable upstream: %v", err)
	}
	want(t, "action", res.Action, ActionCreated)
	want(t, "mode", res.Mode, ModeOffline)
	want(t, "warning", res.Warning, UnreachableWarning)
	if !strings.Contains(f.progress.String(), "starting anyway") {
		t.Errorf("up did not say it starts without the upstream:\n%s", f.progress.String())
	}

	g := newUpFixture(t, ModeOnline)
	plain := g.spec
	plain.Upstream, plain.Layout = g.unreachable, LayoutPlain
	_, err = g.up(t, plain, "")
	if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "crashes on start") {
		t.Fatalf("--plain with an unreachable upstream: %v", err)
	}
	want(t, "plain engine changes", strings.Join(g.eng.changes(), ", "), "")
}

func TestUpAdoptsTheGuidesContainerAndStartsAStoppedOne(t *testing.T) {
	f := newUpFixture(t, ModeOnline)
	guideData := filepath.Join(t.TempDir(), "registry-guide")
	f.eng.containers["proxy-fake"] = &container.InspectResponse{
		ID: "guide", Path: "/entrypoint.sh", Config: &container.Config{Image: "registry:2"}, HostConfig: &container.HostConfig{},
		State: &container.State{Running: true, Status: container.StateRunning},
		Mounts: []container.MountPoint{{Source: guideData, Destination: containerDataDir},
			{Source: filepath.Join(f.configDir, "fake.yaml"), Destination: containerConfigPath}},
	}
	spec := f.spec
	spec.DataDir = ""
	res, err := f.up(t, spec, f.static)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "action", res.Action, ActionAdopted)
	want(t, "data dir", res.DataDir, guideData)
	if !slices.Contains(res.Changes, "converted: plain -> front") {
		t.Errorf("adoption does not say it converts: %v", res.Changes)
	}

	f.eng.containers["proxy-fake"].State = &container.State{Status: container.StateExited}
	f.eng.calls = nil
	res, err = f.up(t, spec, f.static)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "stopped action", res.Action, ActionStarted)
	want(t, "stopped engine changes", strings.Join(f.eng.changes(), ", "), "start proxy-fake")
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestPortClashNamesTheCacheHoldingIt: a metrics port another host-network
// cache holds is that cache's, not "another process on this host".
func TestPortClashNamesTheCacheHoldingIt(t *testing.T) {
	other := Spec{Name: "other", Port: 5600, MetricsPort: 15600, Network: NetworkHost}.WithDefaults()
	labels, err := specLabels(other, []byte("c"), "")
	if err != nil {
		t.Fatal(err)
	}
	eng := newFakeEngine()
	eng.listed = []container.Summary{{ID: "x", Names: []string{"/proxy-other"}, Labels: labels}}
	for _, tc := range []struct {
		spec     Spec
		port     string
		flag     string
		wantNone bool
	}{
		{spec: Spec{Name: "mine", Port: 15600, Network: NetworkHost, MetricsPort: 15700}, port: "15600", flag: "--port"},
		{spec: Spec{Name: "mine", Port: 5700, Network: NetworkHost, MetricsPort: 15600}, port: "15600", flag: "--metrics-port"},
		{spec: Spec{Name: "mine", Port: 5600, Network: NetworkBridge}, port: "5600", flag: "--port"},
		{spec: Spec{Name: "mine", Port: 5800, Network: NetworkHost, MetricsPort: 15800}, wantNone: true},
	} {
		err := checkPortFree(context.Background(), eng, tc.spec.WithDefaults(), "", false)
		if tc.wantNone {
			if err != nil {
				t.Errorf("%+v: %v", tc.spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "port "+tc.port+" is in use by container proxy-other") ||
			!strings.Contains(err.Error(), tc.flag) || !strings.Contains(err.Error(), "docker bkcache down other") {
			t.Errorf("%+v: %v; want the clash on %s named with %s", tc.spec, err, tc.port, tc.flag)
		}
	}
}

// TestUpDryRunChangesNothing: --dry-run says what up would do for a new cache,
// a changed one and an adopted one, and writes no file and touches no container.
func TestUpDryRunChangesNothing(t *testing.T) {
	f := newUpFixture(t, ModeOnline)
	dry := func(o *UpOptions) { o.DryRun = true }
	res, err := f.up(t, f.spec, f.static, dry)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "action", res.Action, ActionCreated)
	want(t, "dry run", res.DryRun, true)
	want(t, "engine changes", strings.Join(f.eng.changes(), ", "), "")
	if _, err := os.Stat(f.configDir); !os.IsNotExist(err) {
		t.Errorf("a dry run created %s: %v", f.configDir, err)
	}

	if _, err := f.up(t, f.spec, f.static); err != nil {
		t.Fatal(err)
	}
	config, _ := os.ReadFile(f.spec.ConfigPath())
	f.eng.calls = nil
	changed := f.spec
	changed.Restart = "no"
	res, err = f.up(t, changed, f.static, dry)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "action", res.Action, ActionRecreated)
	want(t, "changes", strings.Join(res.Changes, "; "), "restart: always -> no")
	want(t, "engine changes", strings.Join(f.eng.changes(), ", "), "")
	if now, _ := os.ReadFile(f.spec.ConfigPath()); string(now) != string(config) {
		t.Error("a dry run rewrote the config")
	}
}
