//go:build e2e

package docker

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/cache"
)

// A bridge-network cache with --htpasswd publishes its client port only:
// the host's requests reach it from the bridge gateway, not loopback, so
// `status`, `verify` and `prune` pass its guard with the admin token. A
// metrics listener exists only with --metrics-port (Prometheus metrics on
// 127.0.0.1:PORT), and `up` without the flag removes it again.
func TestBridgeCacheWithoutMetricsPort(t *testing.T) {
	const user, secret = "bkpull", "Pull-S3cret-41ab"
	upstream := startBridgeUpstream(t)
	set := pushSet(t, upstream.published, "blueking/bridge", 1, 0, 0, 2, 128<<10)

	dir := t.TempDir()
	htpasswd := writeHtpasswd(t, dir, user, secret)
	c := newTestCache(t)
	args := []string{"bkcache", "up", "--name", c.name, "--upstream", "http://" + upstream.bridgeAddr, "--port", itoa(c.port),
		"--bind", "127.0.0.1", "--image", registryImage, "--pull", "never", "--htpasswd", htpasswd,
		"--config-dir", c.configDir, "--data-dir", c.dataDir, "--wait", "30s"}
	mustDocker(t, args...)

	// Only the client port is published, and the front opens no other listener.
	bindings, entrypoint := containerPorts(t, "proxy-"+c.name)
	if len(bindings) != 1 || bindings["5000/tcp"] != "127.0.0.1:"+itoa(c.port) {
		t.Errorf("published ports %v, want only 5000/tcp on 127.0.0.1:%d", bindings, c.port)
	}
	if strings.Contains(entrypoint, "--metrics-listen") {
		t.Errorf("the front runs with a metrics listener nobody asked for: %s", entrypoint)
	}
	// The premise: without the token the guard stands (the host's request
	// does not come from the container's loopback).
	if code := getStatus(t, "http://"+c.addr()+"/bkcache/status"); code != http.StatusUnauthorized {
		t.Errorf("GET /bkcache/status without credentials: %d, want 401 (the host's request should reach the container from the bridge gateway, not its loopback)", code)
	}

	runDockerOK(t, secret+"\n", "login", c.addr(), "-u", user, "--password-stdin")
	t.Cleanup(func() { runDocker(t, "", "logout", c.addr()) })
	ref := c.addr() + "/" + set.refs[0]
	t.Cleanup(func() { dockerRmi(t, ref) })
	mustDocker(t, "pull", "-q", ref)

	st := c.status(t)
	if st.Front == nil || st.Front.Counters.BlobRequests < 3 || st.Mode != cache.ModeOnline || st.Metrics == nil || len(st.Problems) != 0 {
		t.Errorf("status of a bridge cache with htpasswd: front %+v, mode %q, metrics %+v, problems %v", st.Front, st.Mode, st.Metrics, st.Problems)
	}
	r := mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", ref)
	var res []cache.VerifyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 || !res[0].WarmFromCache {
		t.Errorf("verify through a bridge cache with htpasswd: %v\n%s", err, r)
	}
	// Prune asks the front on the client port too, with the token.
	mustDocker(t, "bkcache", "prune", c.name, "--unused-for", "3650d", "--dry-run")

	// Asked for: Prometheus metrics on 127.0.0.1:PORT, the container recreated.
	up := mustDocker(t, append(args, "--metrics-port", itoa(c.metricsPort))...)
	if !strings.Contains(up.stdout+up.stderr, "metricsPort") {
		t.Errorf("up --metrics-port did not say what changed:\n%s", up)
	}
	bindings, _ = containerPorts(t, "proxy-"+c.name)
	if bindings["5001/tcp"] != "127.0.0.1:"+itoa(c.metricsPort) {
		t.Errorf("metrics port binding %v, want 5001/tcp on 127.0.0.1:%d", bindings, c.metricsPort)
	}
	body := waitGet(t, "http://127.0.0.1:"+itoa(c.metricsPort)+"/metrics")
	if !strings.Contains(body, "bkcache_front_blob_requests_total") {
		t.Errorf("no Prometheus metrics on the metrics port:\n%.500s", body)
	}
	// The same flags without it converge back: no listener, data kept.
	up = mustDocker(t, args...)
	if !strings.Contains(up.stdout+up.stderr, "metrics listener removed") {
		t.Errorf("up without --metrics-port did not name the removed listener:\n%s", up)
	}
	if bindings, _ = containerPorts(t, "proxy-"+c.name); len(bindings) != 1 {
		t.Errorf("published ports after up without --metrics-port: %v", bindings)
	}
	if st := c.status(t); st.Front == nil || st.Mode != cache.ModeOnline || len(st.Problems) != 0 {
		t.Errorf("status after the listener went: %+v %v", st.Front, st.Problems)
	}
	r = mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", ref)
	res = nil
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 || !res[0].WarmFromCache || res[0].CachedBefore != res[0].Blobs {
		t.Errorf("verify after the recreate (data kept): %v\n%s", err, r)
	}
}

// bridgeUpstream is registry:2 in a bridge-network container: the cache's
// container reaches it on the bridge, the test pushes to its port published
// on loopback.
type bridgeUpstream struct{ bridgeAddr, published string }

func startBridgeUpstream(t *testing.T) bridgeUpstream {
	t.Helper()
	name := "bkt-upstream-" + itoa(freePort(t))
	port := freePort(t)
	// Removed also when `docker run` fails after creating the container.
	t.Cleanup(func() { runDocker(t, "", "rm", "-f", "-v", name) })
	mustDocker(t, "run", "-d", "--name", name, "-p", "127.0.0.1:"+itoa(port)+":5000", registryImage)
	ip := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout)
	if ip == "" {
		t.Fatalf("upstream container %s has no bridge address", name)
	}
	u := bridgeUpstream{bridgeAddr: ip + ":5000", published: "127.0.0.1:" + itoa(port)}
	waitGet(t, "http://"+u.published+"/v2/")
	return u
}

// containerPorts are a container's published ports (container port -> host
// address) and its entrypoint.
func containerPorts(t *testing.T, name string) (map[string]string, string) {
	t.Helper()
	var info []struct {
		Config     struct{ Entrypoint []string }
		HostConfig struct {
			PortBindings map[string][]struct{ HostIP, HostPort string }
		}
	}
	if err := json.Unmarshal([]byte(mustDocker(t, "inspect", name).stdout), &info); err != nil || len(info) != 1 {
		t.Fatalf("inspect %s: %v", name, err)
	}
	out := map[string]string{}
	for p, bs := range info[0].HostConfig.PortBindings {
		for _, b := range bs {
			out[p] = b.HostIP + ":" + b.HostPort
		}
	}
	return out, strings.Join(info[0].Config.Entrypoint, " ")
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitGet GETs url until it answers 200 (at most 30 s) and returns the body.
func waitGet(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(body)
			}
			err = &httpStatusError{resp.Status}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type httpStatusError struct{ status string }

func (e *httpStatusError) Error() string { return "answered " + e.status }

func runDockerOK(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if r := runDocker(t, stdin, args...); r.code != 0 {
		t.Fatalf("docker %s: %s", strings.Join(args, " "), r)
	}
}
