package cache

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"

	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/printer"
)

// Status is what `docker bkcache status` shows of one cache.
type Status struct {
	Name      string `json:"name"`
	Container string `json:"container"`
	Layout    string `json:"layout"`
	Upstream  string `json:"upstream"`
	Address   string `json:"address"`
	Port      int    `json:"port"`
	Network   string `json:"network"`
	Image     string `json:"image"`
	State     string `json:"state"`
	Restarts  int    `json:"restarts"`
	Health    string `json:"health"`
	DataDir   string `json:"dataDir"`
	DiskBytes int64  `json:"diskBytes"`
	// Disk is the front's view of its store: used, budget, the file
	// system's free space, and "ok", "warning" or "disk full".
	Disk    *front.DiskStatus `json:"disk,omitempty"`
	Metrics *CacheMetrics     `json:"metrics,omitempty"`
	// Mode, since when and in words: the front's, online or offline.
	Mode      string     `json:"mode,omitempty"`
	ModeSince *time.Time `json:"modeSince,omitempty"`
	ModeText  string     `json:"modeText,omitempty"`
	// Front holds the front's figures; nil for the plain layout.
	Front    *FrontFigures `json:"front,omitempty"`
	Problems []string      `json:"problems,omitempty"`
}

// Modes of a front cache.
const (
	ModeOnline  = "online"
	ModeOffline = "offline"
)

// FrontFigures are what the front counts and registry:2 cannot: blob
// requests served from storage vs fetched, bytes from the upstream vs served,
// clients that shared one download.
type FrontFigures struct {
	Version      string `json:"version"`
	ProxyChild   string `json:"proxyChild"`
	UpstreamRate int64  `json:"upstreamRate"`
	LastError    string `json:"lastError,omitempty"`
	// HitRatio is blobHits / blobRequests (0 before the first request).
	HitRatio float64 `json:"hitRatio"`
	// BytesSaved is servedBytes - upstreamBytes: what the slow link did not
	// carry; never below 0 (a blob fetched and not stored is served once).
	BytesSaved int64 `json:"bytesSaved"`
	// SharedDownloads counts requests that joined a download another had started.
	SharedDownloads int64         `json:"sharedDownloads"`
	Counters        FrontCounters `json:"counters"`
}

// FrontStatus is the front's GET /bkcache/status (FRONT.md).
type FrontStatus struct {
	Layout       string            `json:"layout"`
	Version      string            `json:"version"`
	Upstream     string            `json:"upstream"`
	Mode         string            `json:"mode"`
	Since        string            `json:"since"`            // RFC 3339
	Reason       string            `json:"reason,omitempty"` // offline: "not answering" or "unreachable"
	LastError    string            `json:"lastError"`
	ProxyChild   string            `json:"proxyChild"`
	UpstreamRate int64             `json:"upstreamRate"`
	InFlight     int               `json:"inFlight"` // blob downloads not yet stored and linked
	Counters     FrontCounters     `json:"counters"`
	Disk         *front.DiskStatus `json:"disk,omitempty"`
}

// SinceTime is when the mode began; zero when the front did not say.
func (fs FrontStatus) SinceTime() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, fs.Since)
	return t
}

// FrontCounters are the front's counters since it started: the front's own
// type, so the two sides of /bkcache/status cannot drift apart.
type FrontCounters = front.Counters

// Figures derives what status shows from the front's status.
func (fs FrontStatus) Figures() FrontFigures {
	c := fs.Counters
	f := FrontFigures{
		Version: fs.Version, ProxyChild: fs.ProxyChild, UpstreamRate: fs.UpstreamRate, LastError: fs.LastError,
		BytesSaved: max(c.ServedBytes-c.UpstreamBytes, 0), SharedDownloads: c.SharedWaiters, Counters: c,
	}
	if c.BlobRequests > 0 {
		f.HitRatio = float64(c.BlobHits) / float64(c.BlobRequests)
	}
	return f
}

// ModeText says a front's mode in words, e.g. "upstream unreachable since
// 12:03, serving cached content"; times are local, with the date when not today.
func ModeText(mode string, since, now time.Time) string {
	if mode != ModeOffline {
		return mode
	}
	when := since.Local().Format("15:04")
	if y, m, d := since.Local().Date(); y != now.Local().Year() || m != now.Local().Month() || d != now.Local().Day() {
		when = since.Local().Format("2006-01-02 15:04")
	}
	return "upstream unreachable since " + when + ", serving cached content"
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

const frontMetricsNote = "manifest counters of the registry:2 child; the blob counters are the front's (front)"

const metricsNote = "registry:2 keeps no usable blob counters; blob hits and misses are not reported (docker bkcache verify measures them per image)"

// Statuses reports every bkcache cache on this engine, or only the named ones.
// Containers that carry bkcache's labels without being its caches are skipped
// and returned, so one of them cannot stop the report on the others.
func Statuses(ctx context.Context, eng Engine, names ...string) ([]Status, []Stranger, error) {
	var strangers []Stranger
	if len(names) == 0 {
		var err error
		if names, strangers, err = Names(ctx, eng); err != nil {
			return nil, nil, err
		}
	}
	out := make([]Status, 0, len(names))
	for _, n := range names {
		if err := ValidateName(n); err != nil {
			return nil, nil, err
		}
		st, err := statusOf(ctx, eng, n)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, st)
	}
	return out, strangers, nil
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
		Name: name, Container: ContainerName(name), Layout: layoutOf(c.Config.Labels), Upstream: spec.Upstream, Port: spec.Port,
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
		if st.Layout == LayoutFront {
			st.addFront(ctx, eng, c, spec)
		} else if addr := metricsAddress(c, spec); addr != "" {
			// registry:2 alone: its debug listener is the only source.
			m, err := readMetrics(ctx, "http://"+addr+"/debug/vars")
			if err != nil {
				st.Problems = append(st.Problems, "metrics unavailable: "+err.Error())
			} else {
				st.Metrics = m
			}
		}
	}
	return st, nil
}

// addFront adds a front's figures, read on the cache's own port.
func (st *Status) addFront(ctx context.Context, eng Engine, c container.InspectResponse, spec Spec) {
	api, err := newFrontAPI(ctx, eng, c, spec, false)
	if err != nil {
		st.Problems = append(st.Problems, "front status unavailable: "+err.Error())
		return
	}
	fs, err := api.status(ctx)
	if err != nil {
		st.Problems = append(st.Problems, "front status unavailable: "+err.Error())
		return
	}
	f := fs.Figures()
	st.Disk = fs.Disk
	st.Problems = append(st.Problems, diskProblems(fs.Disk)...)
	since := fs.SinceTime()
	st.Front, st.Mode, st.ModeText = &f, fs.Mode, ModeText(fs.Mode, since, time.Now())
	if fs.Reason != "" && fs.Mode == ModeOffline {
		st.ModeText = strings.Replace(st.ModeText, "unreachable", fs.Reason, 1)
	}
	if !since.IsZero() {
		st.ModeSince = &since
	}
	if st.Mode != ModeOnline {
		return // the proxy child's counters need the upstream
	}
	m, err := api.vars(ctx)
	if err != nil {
		st.Problems = append(st.Problems, "metrics unavailable: "+err.Error())
		return
	}
	// The front counts blobs itself: the plain layout's note would read as
	// if these figures were missing.
	m.Note = frontMetricsNote
	st.Metrics = m
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

// metricsAddress is the host address of a metrics listener: registry:2's
// debug listener (--plain), or a front's when --metrics-port asked for one
// (or an earlier bkcache made it); "" when there is none.
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

// readMetrics reads registry:2's /debug/vars at url (its debug listener).
func readMetrics(ctx context.Context, url string) (*CacheMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := insecureClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s answered %s", url, resp.Status)
	}
	var vars debugVars
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&vars); err != nil {
		return nil, fmt.Errorf("decode %s: %w", url, err)
	}
	return vars.metrics(), nil
}

// debugVars is the part of registry:2's /debug/vars status reads.
type debugVars struct {
	Registry struct {
		Proxy struct {
			Manifests struct {
				Requests, Hits, Misses, BytesPulled, BytesPushed uint64
			} `json:"manifests"`
		} `json:"proxy"`
	} `json:"registry"`
}

func (v debugVars) metrics() *CacheMetrics {
	p := v.Registry.Proxy
	m := &CacheMetrics{ManifestRequests: p.Manifests.Requests, ManifestMisses: p.Manifests.Misses, Note: metricsNote}
	if m.ManifestRequests > m.ManifestMisses {
		m.ManifestHits = m.ManifestRequests - m.ManifestMisses
	}
	return m
}

// insecureClient probes our own cache, whose certificate may name another host.
func insecureClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// diskProblems are status's warnings about the store: a full disk, a store
// or file system from 90 %, a store that fails.
func diskProblems(d *front.DiskStatus) []string {
	if d == nil {
		return nil
	}
	var out []string
	switch d.State {
	case DiskFull:
		out = append(out, fmt.Sprintf("disk full: new blobs are not stored (cached content is still served) since %s; free space with \"docker bkcache prune\" or set a budget (up --max-size)", d.StoreErrorSince))
	case DiskWarning:
		out = append(out, fmt.Sprintf("disk warning: store %s of budget %s, file system %s free of %s; plan a \"docker bkcache prune\"",
			printer.Bytes(d.UsedBytes), budgetText(d.BudgetBytes), printer.Bytes(d.FreeBytes), printer.Bytes(d.TotalBytes)))
	}
	if d.StoreError != "" && d.State != DiskFull {
		out = append(out, "cannot store: "+d.StoreError+" since "+d.StoreErrorSince)
	}
	return out
}

// Disk states of a front's store.
const (
	DiskOK      = "ok"
	DiskWarning = "warning"
	DiskFull    = "disk full"
)

func budgetText(b int64) string {
	if b <= 0 {
		return "none"
	}
	return printer.Bytes(b)
}

// DiskText is status's DISK column: used / budget, and the file system's free space.
func DiskText(st Status) string {
	if st.Disk == nil {
		return printer.Bytes(st.DiskBytes)
	}
	d := st.Disk
	s := printer.Bytes(st.DiskBytes)
	if d.BudgetBytes > 0 {
		s += " / " + printer.Bytes(d.BudgetBytes)
	}
	s += " (" + printer.Bytes(d.FreeBytes) + " free)"
	if d.State != DiskOK && d.State != "" {
		s += " " + strings.ToUpper(d.State)
	}
	return s
}
