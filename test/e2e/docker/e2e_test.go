//go:build e2e

package docker

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/cache"
)

func TestPluginIsListedByDocker(t *testing.T) {
	help := mustDocker(t, "--help")
	if !strings.Contains(help.stdout, "bkcache") {
		t.Errorf("docker --help does not list bkcache:\n%s", help.stdout)
	}
	info := mustDocker(t, "info")
	if !strings.Contains(info.stdout, "bkcache") || !strings.Contains(info.stdout, "e2e-test") {
		t.Errorf("docker info does not list the bkcache plugin with its version:\n%s", info.stdout)
	}
	for _, sub := range []string{"up", "down", "status", "verify", "logs", "warm", "push", "save", "load"} {
		r := mustDocker(t, "bkcache", sub, "--help")
		if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "docker bkcache "+sub) {
			t.Errorf("docker bkcache %s --help has no example:\n%s", sub, r.stdout)
		}
	}
}

// The guide's check, done through the real docker: a cold pull fills the
// cache, and after `docker rmi` a second pull asks the upstream for no blob.
func TestPullThroughCacheTwice(t *testing.T) {
	up := registrytest.Start(t)
	img, err := registrytest.Image(3, 512*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/slug-app:v1", img); err != nil {
		t.Fatal(err)
	}
	idx, err := up.PushIndex("library/multi:1", 2, 256*1024)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	r := mustDocker(t, c.upArgs(up.URL)...)
	if !strings.Contains(r.stdout, "cache "+c.name+": created") {
		t.Fatalf("first up did not say it created the cache:\n%s", r)
	}
	if !strings.Contains(r.stdout, "kubectl bkcache mirror --registry") {
		t.Errorf("up does not print the mirror line for nodes:\n%s", r.stdout)
	}
	again := mustDocker(t, c.upArgs(up.URL)...)
	if !strings.Contains(again.stdout, "unchanged") {
		t.Errorf("second identical up changed something:\n%s", again)
	}

	ref := c.addr() + "/blueking/slug-app:v1"
	t.Cleanup(func() { dockerRmi(t, ref, c.addr()+"/library/multi:1") })
	before := up.BlobGets()
	mustDocker(t, "pull", ref)
	if up.BlobGets() == before {
		t.Fatalf("cold pull through the cache fetched no blob from the upstream")
	}
	waitStored(t, c.dataDir, "blueking/slug-app", img)
	dockerRmi(t, ref)
	before = up.BlobGets()
	mustDocker(t, "pull", ref)
	if n := up.BlobGets() - before; n != 0 {
		t.Errorf("warm pull after docker rmi asked the upstream for %d blobs, want 0", n)
	}

	// Multi-arch: docker pulls the linux/amd64 child through the cache.
	mustDocker(t, "pull", c.addr()+"/library/multi:1")
	child, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	amd64, err := idx.Image(child.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	waitStored(t, c.dataDir, "library/multi", amd64)

	st := mustDocker(t, "bkcache", "status", c.name, "-o", "json")
	var sts []cache.Status
	if err := json.Unmarshal([]byte(st.stdout), &sts); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, st.stdout)
	}
	if len(sts) != 1 || sts[0].State != "running" || sts[0].Health != "ok" || sts[0].DiskBytes <= 0 || sts[0].Metrics == nil || sts[0].Metrics.ManifestMisses == 0 {
		t.Errorf("status does not show a healthy cache with disk use and manifest misses: %+v", sts)
	}
	table := mustDocker(t, "bkcache", "status")
	if !strings.Contains(table.stdout, c.name) || !strings.Contains(table.stdout, up.URL) {
		t.Errorf("status table does not list cache %s:\n%s", c.name, table.stdout)
	}

	logs := mustDocker(t, "bkcache", "logs", "--tail", "50", c.name)
	if !strings.Contains(logs.stdout+logs.stderr, "blueking/slug-app") {
		t.Errorf("logs show no request for the pulled image:\n%s", logs)
	}
}

func TestVerifyColdThenWarm(t *testing.T) {
	up := registrytest.Start(t)
	img, err := registrytest.Image(2, 256*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/bk-paas:1.2.3", img); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	r := mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", strings.TrimPrefix(up.URL, "http://")+"/blueking/bk-paas:1.2.3")
	var res []cache.VerifyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("verify -o json: %v\n%s", err, r)
	}
	if len(res) != 1 || res[0].Blobs != 3 || res[0].Cold.UpstreamBlobFetches != 3 || res[0].Warm.UpstreamBlobFetches != 0 || !res[0].WarmFromCache {
		t.Errorf("verify = %+v, want 3 blobs fetched upstream cold and none warm", res)
	}
	text := mustDocker(t, "bkcache", "verify", "--cache", c.name, "blueking/bk-paas:1.2.3")
	if !strings.Contains(text.stdout, "warm pass") || !strings.Contains(text.stdout, "ok: the warm pass was served from the cache") {
		t.Errorf("verify output:\n%s", text)
	}
	other := runDocker(t, "", "bkcache", "verify", "--cache", c.name, "quay.io/other/image:1")
	if other.code == 0 || !strings.Contains(other.stderr, "proxies") {
		t.Errorf("verify of an image on another registry should fail naming the cache's upstream:\n%s", other)
	}
}

func TestChangedSpecRecreatesAndKeepsData(t *testing.T) {
	up := registrytest.Start(t)
	img, _ := registrytest.Image(2, 256*1024, "amd64")
	if _, err := up.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	id1 := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.Id}}", "proxy-"+c.name).stdout)
	mustDocker(t, "bkcache", "verify", "--cache", c.name, "blueking/app:1")

	r := mustDocker(t, c.upArgs(up.URL, "--restart", "unless-stopped")...)
	if !strings.Contains(r.stdout, "recreated") || !strings.Contains(r.stdout, "restart: always -> unless-stopped") {
		t.Errorf("changed flag did not recreate with the change named:\n%s", r)
	}
	id2 := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.Id}}", "proxy-"+c.name).stdout)
	if id1 == id2 {
		t.Errorf("container was not recreated (same id %s)", id1)
	}
	policy := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "proxy-"+c.name).stdout)
	if policy != "unless-stopped" {
		t.Errorf("restart policy = %q, want unless-stopped", policy)
	}
	before := up.BlobGets()
	v := mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", "blueking/app:1")
	var res []cache.VerifyResult
	json.Unmarshal([]byte(v.stdout), &res)
	if len(res) != 1 || res[0].CachedBefore != res[0].Blobs || up.BlobGets() != before {
		t.Errorf("data was not kept across the recreate: %+v, upstream blob GETs %d -> %d", res, before, up.BlobGets())
	}
}

// A host that ran the guide's script has proxy-NAME with no bkcache labels.
func TestAdoptsTheGuidesContainer(t *testing.T) {
	up := registrytest.Start(t)
	img, _ := registrytest.Image(2, 256*1024, "amd64")
	if _, err := up.Push("blueking/app:2", img); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	guideData := filepath.Join(filepath.Dir(c.dataDir), "registry-guide")
	os.MkdirAll(c.configDir, 0o755)
	os.MkdirAll(guideData, 0o755)
	guideConfig := `version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: :` + itoa(c.port) + `
  secret: ` + c.name + `-` + itoa(c.port) + `
  headers:
    X-Content-Type-Options: [nosniff]
proxy:
  remoteurl: ` + up.URL + "\n"
	cfgPath := filepath.Join(c.configDir, c.name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(guideConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	mustDocker(t, "run", "-d", "--restart=always", "--network", "host",
		"-v", cfgPath+":/etc/docker/registry/config.yml", "-v", guideData+":/var/lib/registry",
		"--name", "proxy-"+c.name, registryImage)
	waitHTTP(t, "http://"+c.addr()+"/v2/")
	// Fill the guide's cache through the real docker before adopting it.
	ref := c.addr() + "/blueking/app:2"
	t.Cleanup(func() { dockerRmi(t, ref) })
	mustDocker(t, "pull", ref)
	waitStored(t, guideData, "blueking/app", img)

	r := mustDocker(t, withoutFlag(c.upArgs(up.URL), "--data-dir")...)
	if !strings.Contains(r.stdout, "adopted") || !strings.Contains(r.stdout, guideData) || !strings.Contains(r.stdout, "converted: plain -> front") {
		t.Fatalf("up did not adopt the guide's container with its data dir %s, converting it to the front:\n%s", guideData, r)
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "secret: "+c.name+"-"+itoa(c.port)) {
		t.Errorf("adopted config kept the guide's guessable http secret")
	}
	if bak, err := os.ReadFile(cfgPath + ".bak"); err != nil || string(bak) != guideConfig {
		t.Errorf("the guide's config was not kept as %s.bak: %v", cfgPath, err)
	}
	before := up.BlobGets()
	v := mustDocker(t, "bkcache", "verify", "--cache", c.name, "-o", "json", "blueking/app:2")
	var res []cache.VerifyResult
	json.Unmarshal([]byte(v.stdout), &res)
	if len(res) != 1 || res[0].CachedBefore != res[0].Blobs || up.BlobGets() != before {
		t.Errorf("adopted cache lost the guide's data: %+v, upstream blob GETs %d -> %d", res, before, up.BlobGets())
	}
	again := mustDocker(t, withoutFlag(c.upArgs(up.URL), "--data-dir")...)
	if !strings.Contains(again.stdout, "unchanged") {
		t.Errorf("up after adoption is not idempotent:\n%s", again)
	}
}

func withoutFlag(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func itoa(n int) string { return strconv.Itoa(n) }

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
