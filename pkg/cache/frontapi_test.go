package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/bkcache/bkcache/pkg/front"
)

// tokenEngine answers CopyFromContainer with one file, as the engine's
// archive endpoint does (a tar holding it), or with an error.
type tokenEngine struct {
	*fakeEngine
	files  map[string]string
	copies int
}

func (e *tokenEngine) CopyFromContainer(_ context.Context, _ string, o client.CopyFromContainerOptions) (client.CopyFromContainerResult, error) {
	e.copies++
	body, ok := e.files[o.SourcePath]
	if !ok {
		return client.CopyFromContainerResult{}, errors.New("Could not find the file " + o.SourcePath + " in container")
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: filepath.Base(o.SourcePath), Mode: 0o600, Size: int64(len(body))})
	tw.Write([]byte(body))
	tw.Close()
	return client.CopyFromContainerResult{Content: io.NopCloser(&b)}, nil
}

// The CLI passes a front's htpasswd guard with the admin token, read from
// the data directory on the host, else through the engine; without either
// it names the fix. Without htpasswd it reads no token at all.
func TestFrontAPIToken(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	guarded := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if guarded && r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(FrontStatus{Layout: LayoutFront, Mode: ModeOnline, Counters: FrontCounters{BlobRequests: 7}})
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	spec := Spec{Name: "tok", Port: port}

	withToken := t.TempDir()
	os.MkdirAll(filepath.Join(withToken, frontScratch), 0o700)
	os.WriteFile(filepath.Join(withToken, frontScratch, front.AdminTokenFile), []byte(token+"\n"), 0o600)
	missing := filepath.Join(t.TempDir(), "not-on-this-host")
	inContainer := map[string]string{containerDataDir + "/" + frontScratch + "/" + front.AdminTokenFile: token + "\n"}
	ctr := func(dataDir string, htpasswd bool) container.InspectResponse {
		c := container.InspectResponse{ID: "c1", Name: "/proxy-tok", Mounts: []container.MountPoint{{Source: dataDir, Destination: containerDataDir}}}
		if htpasswd {
			c.Mounts = append(c.Mounts, container.MountPoint{Source: "/etc/htpasswd", Destination: containerHtpasswdPath})
		}
		return c
	}
	for _, tc := range []struct {
		name       string
		c          container.InspectResponse
		files      map[string]string
		guarded    bool
		wantCopies int
		wantErr    string
	}{
		{"token from the data directory", ctr(withToken, true), nil, true, 0, ""},
		{"token through the engine", ctr(missing, true), inContainer, true, 1, ""},
		{"no token anywhere", ctr(missing, true), nil, true, 1, "answered 401 Unauthorized: cache tok asks for htpasswd credentials, and its admin token (DATA/bkcache/admin-token) could not be read"},
		{"no htpasswd: no token read", ctr(missing, false), inContainer, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			guarded = tc.guarded
			eng := &tokenEngine{fakeEngine: newFakeEngine(), files: tc.files}
			api, err := newFrontAPI(context.Background(), eng, tc.c, spec, false)
			if err != nil {
				t.Fatal(err)
			}
			fs, err := api.status(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "run the command as root (sudo)") {
					t.Errorf("error %v, want one with %q and the fix", err, tc.wantErr)
				}
			} else if err != nil || fs.Counters.BlobRequests != 7 {
				t.Errorf("status: %+v, %v", fs, err)
			}
			want(t, "engine copies", eng.copies, tc.wantCopies)
		})
	}
}

// A cache an earlier bkcache made: its front takes the token only for prune
// and refuses it on a guarded /bkcache/status, but it has a metrics listener
// on loopback, which the CLI asks instead.
func TestFrontAPIEarlierCache(t *testing.T) {
	const token = "fedcba9876543210fedcba9876543210"
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	t.Cleanup(refusing.Close)
	listener := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/bkcache/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(FrontStatus{Layout: LayoutFront, Mode: ModeOnline, Counters: FrontCounters{BlobRequests: 3}})
	}))
	t.Cleanup(listener.Close)
	dataDir := t.TempDir()
	os.MkdirAll(filepath.Join(dataDir, frontScratch), 0o700)
	os.WriteFile(filepath.Join(dataDir, frontScratch, front.AdminTokenFile), []byte(token), 0o600)
	metricsPort := strconv.Itoa(listener.Listener.Addr().(*net.TCPAddr).Port)
	c := container.InspectResponse{
		Mounts: []container.MountPoint{{Source: dataDir, Destination: containerDataDir}, {Source: "/h", Destination: containerHtpasswdPath}},
		NetworkSettings: &container.NetworkSettings{Ports: network.PortMap{
			network.MustParsePort("5001/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: metricsPort}},
		}},
	}
	spec := Spec{Name: "old", Port: refusing.Listener.Addr().(*net.TCPAddr).Port, Network: NetworkBridge}
	api, err := newFrontAPI(context.Background(), newFakeEngine(), c, spec, false)
	if err != nil {
		t.Fatal(err)
	}
	if fs, err := api.status(context.Background()); err != nil || fs.Counters.BlobRequests != 3 {
		t.Errorf("status of an earlier cache: %+v, %v", fs, err)
	}
	c.NetworkSettings = nil // no listener either: the error names up
	api, _ = newFrontAPI(context.Background(), newFakeEngine(), c, spec, false)
	if _, err := api.status(context.Background()); err == nil || !strings.Contains(err.Error(), `refused its admin token (a front of an earlier bkcache); run "docker bkcache up --name old"`) {
		t.Errorf("error %v, want one naming up", err)
	}
}
