package cache

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/bkcache/bkcache/pkg/front"
)

// readTimeout bounds one read of a front's figures: the front answers them
// from memory, also while its upstream is silent.
const readTimeout = 3 * time.Second

// frontAPI reads a front cache's own figures (status, registry vars) and
// asks it to prune, on the cache's own port under /bkcache/: no separate
// metrics port is needed, for any port and network mode.
type frontAPI struct {
	name string
	base string // scheme://address/bkcache
	// token is the front's admin token ("" when not read or unreadable):
	// it passes the htpasswd guard, which a bridge-network cache applies to
	// the host's requests (they arrive from the bridge gateway, not loopback).
	token    string
	tokenErr error
	// metrics is a metrics listener a cache made by an earlier bkcache may
	// have (127.0.0.1:PORT); asked when the cache's port refuses the token
	// (its older front takes the token only for prune).
	metrics string
}

// newFrontAPI is how this host reaches the front of container c. The admin
// token is read when needed: for prune, or when htpasswd guards the port.
func newFrontAPI(ctx context.Context, eng Engine, c container.InspectResponse, spec Spec, needToken bool) (frontAPI, error) {
	if spec.Port == 0 {
		return frontAPI{}, fmt.Errorf("cache %s has no port in its labels to reach its front; run \"docker bkcache up --name %s\" to update it", spec.Name, spec.Name)
	}
	api := frontAPI{name: spec.Name, base: spec.Scheme() + "://" + spec.LocalAddress() + "/bkcache", metrics: metricsAddress(c, spec)}
	if needToken || mountSource(c, containerHtpasswdPath) != "" {
		api.token, api.tokenErr = adminToken(ctx, eng, c)
	}
	return api, nil
}

// adminToken reads the front's admin token: from the data directory on this
// host, else through the engine from the container (a user of the engine who
// cannot read root's data directory, or a remote engine).
func adminToken(ctx context.Context, eng Engine, c container.InspectResponse) (string, error) {
	rel := path.Join(frontScratch, front.AdminTokenFile)
	var hostErr error
	if dir := mountSource(c, containerDataDir); dir != "" {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err == nil {
			return tokenOf(data, filepath.Join(dir, filepath.FromSlash(rel)))
		}
		hostErr = err
	}
	data, err := copyFileFrom(ctx, eng, c.ID, path.Join(containerDataDir, rel))
	if err != nil {
		if hostErr != nil {
			return "", fmt.Errorf("%w; through the engine: %w", hostErr, err)
		}
		return "", fmt.Errorf("through the engine: %w", err)
	}
	return tokenOf(data, path.Join(containerDataDir, rel)+" in container "+c.Name)
}

func tokenOf(data []byte, where string) (string, error) {
	tok := strings.TrimSpace(string(data))
	if len(tok) < 32 {
		return "", fmt.Errorf("%s holds no admin token", where)
	}
	return tok, nil
}

// copyFileFrom reads one small file from a container through the engine.
func copyFileFrom(ctx context.Context, eng Engine, id, file string) ([]byte, error) {
	res, err := eng.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: file})
	if err != nil {
		return nil, err
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	if _, err := tr.Next(); err != nil {
		return nil, fmt.Errorf("read %s from the container: %w", file, err)
	}
	return io.ReadAll(io.LimitReader(tr, 4096))
}

// do sends one request to the front; a 401 becomes an error naming the fix.
func (a frontAPI) do(ctx context.Context, method, p string, body []byte) (*http.Response, error) {
	send := func(base string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+p, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		if a.token != "" {
			req.Header.Set("Authorization", "Bearer "+a.token)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return insecureClient().Do(req)
	}
	resp, err := send(a.base)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	resp.Body.Close()
	if a.token != "" && a.metrics != "" {
		resp, err := send("http://" + a.metrics + "/bkcache")
		if err == nil && resp.StatusCode != http.StatusUnauthorized {
			return resp, nil
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	return nil, a.unauthorized(method, p)
}

func (a frontAPI) unauthorized(method, p string) error {
	what := fmt.Sprintf("%s %s answered 401 Unauthorized", method, a.base+p)
	if a.token == "" {
		why := "not read"
		if a.tokenErr != nil {
			why = a.tokenErr.Error()
		}
		return fmt.Errorf("%s: cache %s asks for htpasswd credentials, and its admin token (DATA/%s/%s) could not be read (%s); run the command as root (sudo)",
			what, a.name, frontScratch, front.AdminTokenFile, why)
	}
	return fmt.Errorf("%s: cache %s refused its admin token (a front of an earlier bkcache); run \"docker bkcache up --name %s\" to update it (data kept)", what, a.name, a.name)
}

// get reads path as JSON into v (at most 1 MiB).
func (a frontAPI) get(ctx context.Context, p string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	resp, err := a.do(ctx, http.MethodGet, p, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s answered %s", a.base+p, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", a.base+p, err)
	}
	return nil
}

// status is the front's /bkcache/status.
func (a frontAPI) status(ctx context.Context) (FrontStatus, error) {
	var fs FrontStatus
	err := a.get(ctx, "/status", &fs)
	return fs, err
}

// vars are the registry:2 proxy child's manifest counters (/bkcache/debug/vars).
func (a frontAPI) vars(ctx context.Context) (*CacheMetrics, error) {
	var v debugVars
	if err := a.get(ctx, "/debug/vars", &v); err != nil {
		return nil, err
	}
	return v.metrics(), nil
}

// prune posts a prune request; the admin token is required.
func (a frontAPI) prune(ctx context.Context, req front.PruneRequest) (front.PruneResult, error) {
	if a.token == "" {
		why := errors.New("not read")
		if a.tokenErr != nil {
			why = a.tokenErr
		}
		return front.PruneResult{}, fmt.Errorf("read the prune token of cache %s: %w; run as root (sudo), or run \"docker bkcache up --name %s\" if an earlier bkcache made it", a.name, why, a.name)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return front.PruneResult{}, err
	}
	url := a.base + "/prune"
	resp, err := a.do(ctx, http.MethodPost, "/prune", body)
	if err != nil {
		return front.PruneResult{}, fmt.Errorf("prune through %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return front.PruneResult{}, fmt.Errorf("prune through %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	var res front.PruneResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return front.PruneResult{}, fmt.Errorf("prune through %s: %w", url, err)
	}
	return res, nil
}

// frontStatus reads the status of a front cache on this engine.
func frontStatus(ctx context.Context, eng Engine, spec Spec) (FrontStatus, error) {
	c, ok, err := inspect(ctx, eng, spec.ContainerName())
	if err != nil {
		return FrontStatus{}, err
	}
	if !ok {
		return FrontStatus{}, notFound(spec.Name)
	}
	api, err := newFrontAPI(ctx, eng, c, spec, false)
	if err != nil {
		return FrontStatus{}, err
	}
	return api.status(ctx)
}
