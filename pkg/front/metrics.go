package front

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bkcache/bkcache/pkg/version"
)

// counters are the front's figures; each is a Prometheus counter too.
type counters struct {
	blobRequests, blobHits, blobLinks, blobFetches, sharedWaiters,
	upstreamBytes, servedBytes, resumes, digestMismatches, nsRejected,
	offlineRefusals, manifestShared, blobFileServes atomic.Int64
}

// Counters is the counters' snapshot in /bkcache/status.
type Counters struct {
	// BlobRequests: blob GET/HEAD requests the front answered.
	BlobRequests int64 `json:"blobRequests"`
	// BlobHits: blob requests served from storage (linked ones included).
	BlobHits int64 `json:"blobHits"`
	// BlobFileServes: blob requests the front answered from the storage
	// file itself (sendfile), not through the local registry child.
	BlobFileServes int64 `json:"blobFileServes"`
	// BlobLinks: blobs stored for another repository linked into the one asked.
	BlobLinks int64 `json:"blobLinks"`
	// BlobFetches: upstream blob downloads started.
	BlobFetches int64 `json:"blobFetches"`
	// SharedWaiters: requests that joined a download another request started.
	SharedWaiters int64 `json:"sharedWaiters"`
	// UpstreamBytes: blob bytes read from the upstream.
	UpstreamBytes int64 `json:"upstreamBytes"`
	// ServedBytes: blob bytes sent to clients.
	ServedBytes int64 `json:"servedBytes"`
	// Resumes: broken upstream reads resumed with Range.
	Resumes int64 `json:"resumes"`
	// DigestMismatches: downloads whose bytes did not match their digest (nothing stored).
	DigestMismatches int64 `json:"digestMismatches"`
	// NsRejected: requests refused because ?ns= named another registry.
	NsRejected int64 `json:"nsRejected"`
	// OfflineRefusals: requests for content not cached, refused while the upstream is unreachable.
	OfflineRefusals int64 `json:"offlineRefusals"`
	// ManifestShared: manifest requests answered by an identical one already
	// in flight to the registry (single-flight; nothing is cached).
	ManifestShared int64 `json:"manifestShared"`
	// Outages: times the upstream went offline (refused, cut, or silent past
	// a deadline) since the front started.
	Outages int64 `json:"outages"`
	// OfflineSeconds: total time offline since the front started, the
	// current outage included.
	OfflineSeconds int64 `json:"offlineSeconds"`
}

func (c *counters) snapshot() Counters {
	return Counters{
		BlobRequests: c.blobRequests.Load(), BlobHits: c.blobHits.Load(), BlobFileServes: c.blobFileServes.Load(), BlobLinks: c.blobLinks.Load(),
		BlobFetches: c.blobFetches.Load(), SharedWaiters: c.sharedWaiters.Load(), UpstreamBytes: c.upstreamBytes.Load(),
		ServedBytes: c.servedBytes.Load(), Resumes: c.resumes.Load(), DigestMismatches: c.digestMismatches.Load(),
		NsRejected: c.nsRejected.Load(), OfflineRefusals: c.offlineRefusals.Load(),
		ManifestShared: c.manifestShared.Load(),
	}
}

// Status is the JSON of GET /bkcache/status (on the cache's port, and on the
// metrics listener when there is one).
type Status struct {
	Layout   string `json:"layout"` // always "front"
	Version  string `json:"version"`
	Upstream string `json:"upstream"`
	Mode     string `json:"mode"`  // online | offline
	Since    string `json:"since"` // RFC 3339: when the mode began
	// Reason says why offline: "not answering" (accepts, stays silent past
	// the deadlines) or "unreachable" (refused, cut); "" online.
	Reason       string `json:"reason,omitempty"`
	LastError    string `json:"lastError"`
	ProxyChild   string `json:"proxyChild"` // running | starting | stopped
	LocalChild   string `json:"localChild"` // running | starting | stopped
	UpstreamRate int64  `json:"upstreamRate"`
	// InFlight is how many blobs are being fetched or stored right now.
	InFlight int      `json:"inFlight"`
	Counters Counters `json:"counters"`
	// Disk is the store's use, budget and free space, and whether storing works.
	Disk *DiskStatus `json:"disk,omitempty"`
}

// Status reports the front's state and figures.
func (s *Server) Status() Status {
	st := s.up.state()
	mode, reason := "offline", st.reason()
	if st.online {
		mode, reason = "online", ""
	}
	c := s.counters.snapshot()
	c.Outages, c.OfflineSeconds = st.outages, int64(st.offlineFor(time.Now())/time.Second)
	return Status{
		Layout: "front", Version: version.Version, Upstream: s.up.String(), Mode: mode,
		Since: st.since.UTC().Format(time.RFC3339), Reason: reason, LastError: st.lastError,
		ProxyChild: s.proxy.State(), LocalChild: s.local.State(), UpstreamRate: s.opts.UpstreamRate,
		InFlight: s.flights.len(), Counters: c,
	}
}

// metricsHandler serves the metrics listener, and /bkcache/… on the client
// listener (/bkcache/status, /bkcache/metrics, /bkcache/debug/vars), so
// status works for every port and network mode.
func (s *Server) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	status := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		st := s.Status()
		d := s.disk(r.Context())
		st.Disk = &d
		enc.Encode(st) //nolint:errcheck // the client may be gone
	}
	metrics := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writePrometheus(w, s.Status())
		if s.proxy.State() == childRunning {
			s.copyDebug(r.Context(), w, "/metrics")
		}
	}
	vars := func(w http.ResponseWriter, r *http.Request) {
		if s.proxy.State() != childRunning {
			http.Error(w, "the registry proxy child is not running", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		s.copyDebug(r.Context(), w, "/debug/vars")
	}
	for _, prefix := range []string{"", "/bkcache"} {
		mux.HandleFunc("GET "+prefix+"/metrics", metrics)
		mux.HandleFunc("GET "+prefix+"/debug/vars", vars)
	}
	mux.HandleFunc("GET /bkcache/status", status)
	mux.HandleFunc("POST /bkcache/prune", s.handlePrune)
	return mux
}

// copyDebug appends the proxy child's debug listener's answer at path.
func (s *Server) copyDebug(ctx context.Context, w io.Writer, path string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.debugAddr+path, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	io.Copy(w, resp.Body) //nolint:errcheck // best effort
}

var camelHump = regexp.MustCompile(`([a-z])([A-Z])`)

// writePrometheus writes bkcache_front_<counter>_total and bkcache_front_online.
func writePrometheus(w io.Writer, st Status) {
	var m map[string]int64
	b, _ := json.Marshal(st.Counters)
	json.Unmarshal(b, &m) //nolint:errcheck // our own JSON
	order := []string{"blobRequests", "blobHits", "blobFileServes", "blobLinks", "blobFetches", "sharedWaiters", "upstreamBytes",
		"servedBytes", "resumes", "digestMismatches", "nsRejected", "offlineRefusals", "manifestShared",
		"outages", "offlineSeconds"}
	for _, k := range order {
		name := "bkcache_front_" + strings.ToLower(camelHump.ReplaceAllString(k, "${1}_${2}")) + "_total"
		fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", name, name, m[k])
	}
	online := 0
	if st.Mode == "online" {
		online = 1
	}
	fmt.Fprintf(w, "# HELP bkcache_front_online 1 while the upstream is reachable.\n# TYPE bkcache_front_online gauge\nbkcache_front_online %d\n", online)
}
