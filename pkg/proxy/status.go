package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
)

// Status is what `docker bkcache status` shows of one cache.
type Status struct {
	Name      string        `json:"name"`
	Container string        `json:"container"`
	Upstream  string        `json:"upstream"`
	Address   string        `json:"address"`
	Port      int           `json:"port"`
	Network   string        `json:"network"`
	Image     string        `json:"image"`
	State     string        `json:"state"`
	Restarts  int           `json:"restarts"`
	Health    string        `json:"health"`
	DataDir   string        `json:"dataDir"`
	DiskBytes int64         `json:"diskBytes"`
	Metrics   *CacheMetrics `json:"metrics,omitempty"`
	Problems  []string      `json:"problems,omitempty"`
}

// CacheMetrics are read from registry:2's own debug endpoint (/debug/vars).
// registry:2 keeps meaningful counters only for manifests: each one served
// (requests) and each one fetched from the upstream (misses). Its blob
// counters stay at zero or count every blob as a hit, so none is reported.
type CacheMetrics struct {
	ManifestRequests uint64 `json:"manifestRequests"`
	ManifestHits     uint64 `json:"manifestHits"`
	ManifestMisses   uint64 `json:"manifestMisses"`
	Note             string `json:"note"`
}

const metricsNote = "registry:2 keeps no usable blob counters; blob hits and misses are not reported (docker bkcache verify measures them per image)"

// Statuses reports every bkcache cache on this engine, or only the named ones.
func Statuses(ctx context.Context, eng Engine, names ...string) ([]Status, error) {
	if len(names) == 0 {
		var err error
		if names, err = Names(ctx, eng); err != nil {
			return nil, err
		}
	}
	out := make([]Status, 0, len(names))
	for _, n := range names {
		st, err := statusOf(ctx, eng, n)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func statusOf(ctx context.Context, eng Engine, name string) (Status, error) {
	c, ok, err := inspect(ctx, eng, ContainerName(name))
	if err != nil {
		return Status{}, err
	}
	if !ok {
		return Status{}, notFound(name)
	}
	spec, _ := specFromLabels(c.Config.Labels)
	st := Status{
		Name: name, Container: ContainerName(name), Upstream: spec.Upstream, Port: spec.Port,
		Network: spec.Network, Image: c.Config.Image, Restarts: c.RestartCount, DiskBytes: -1,
		DataDir: mountSource(c, containerDataDir),
	}
	if spec.Port != 0 {
		st.Address = spec.LocalAddress()
	}
	if c.State != nil {
		st.State = string(c.State.Status)
	}
	if st.DataDir != "" {
		if n, err := dirSize(st.DataDir); err == nil {
			st.DiskBytes = n
		} else {
			st.Problems = append(st.Problems, fmt.Sprintf("disk use of %s unknown: %v", st.DataDir, err))
		}
	}
	st.Health = "not running"
	if c.State != nil && c.State.Running && spec.Port != 0 {
		if err := probe(ctx, spec); err != nil {
			st.Health = "unhealthy"
			st.Problems = append(st.Problems, err.Error())
		} else {
			st.Health = "ok"
		}
		if addr := metricsAddress(c, spec); addr != "" {
			m, err := readMetrics(ctx, addr)
			if err != nil {
				st.Problems = append(st.Problems, "metrics unavailable: "+err.Error())
			} else {
				st.Metrics = m
			}
		}
	}
	return st, nil
}

func probe(ctx context.Context, spec Spec) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := spec.Scheme() + "://" + spec.LocalAddress() + "/v2/"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := insecureClient().Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("GET %s answered %s", url, resp.Status)
	}
	return nil
}

// metricsAddress is the host address of the registry's debug listener.
func metricsAddress(c container.InspectResponse, spec Spec) string {
	if spec.Network == NetworkHost {
		if spec.MetricsPort == 0 {
			return ""
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.MetricsPort))
	}
	if c.NetworkSettings == nil {
		return ""
	}
	for _, b := range c.NetworkSettings.Ports[network.MustParsePort(strconv.Itoa(containerDebugPort)+"/tcp")] {
		if b.HostPort != "" {
			return net.JoinHostPort("127.0.0.1", b.HostPort)
		}
	}
	return ""
}

func readMetrics(ctx context.Context, addr string) (*CacheMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/vars", nil)
	resp, err := insecureClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET http://%s/debug/vars answered %s", addr, resp.Status)
	}
	type counters struct {
		Requests, Hits, Misses, BytesPulled, BytesPushed uint64
	}
	var vars struct {
		Registry struct {
			Proxy struct {
				Manifests counters `json:"manifests"`
			} `json:"proxy"`
		} `json:"registry"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return nil, fmt.Errorf("decode http://%s/debug/vars: %w", addr, err)
	}
	p := vars.Registry.Proxy
	m := &CacheMetrics{ManifestRequests: p.Manifests.Requests, ManifestMisses: p.Manifests.Misses, Note: metricsNote}
	if m.ManifestRequests > m.ManifestMisses {
		m.ManifestHits = m.ManifestRequests - m.ManifestMisses
	}
	return m, nil
}

// insecureClient probes our own cache, whose certificate may name another host.
func insecureClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}
