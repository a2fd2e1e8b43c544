// Package front is the cache front: the process that runs as PID 1 of the
// cache container, in front of two unmodified registry:2 children on unix
// sockets. It fetches each missing blob from the upstream once per digest for
// any number of clients and repositories, streams it to every waiter as it
// arrives (Range included), checks its digest before it is stored through
// registry:2's own code, resumes broken upstream reads, and keeps serving
// cached content while the upstream is unreachable. Everything else is
// passed to registry:2.
package front

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/bkcache/bkcache/pkg/blobfetch"
)

// Options is the front's command line.
type Options struct {
	// RegistryConfig is the registry:2 config `docker bkcache up` renders.
	RegistryConfig string
	// Listen is where clients connect (":5000", "BIND:PORT").
	Listen string
	// MetricsListen serves /bkcache/status, /metrics and /debug/vars; "" = none.
	MetricsListen string
	// RunDir holds the children's sockets and configs.
	RunDir string
	// RegistryBin is the registry:2 binary.
	RegistryBin string
	// UpstreamRate caps the blob bytes per second read from the upstream; 0 = no cap.
	UpstreamRate int64
	// MaxSize is the store's budget in bytes: the least recently served
	// content is evicted to stay under it; 0 = no budget.
	MaxSize int64
	// MaxBlobSize caps a blob download whose size neither a manifest the
	// front served nor the upstream's Content-Length declares; 0 means
	// blobfetch.DefaultMaxSize.
	MaxBlobSize int64

	// StoredViaChild serves stored blobs through the local registry child
	// as earlier versions did, instead of from the storage file (sendfile);
	// for benchmarks that compare the two (hidden flag --stored-via-child).
	StoredViaChild bool

	// Not flags: knobs for tests.

	// ProbeInterval is the first pause between reachability probes while
	// offline (then doubling up to ProbeMaxInterval); 0 means 5 s.
	ProbeInterval time.Duration
	// ProbeMaxInterval; 0 means 30 s.
	ProbeMaxInterval time.Duration
	// ProbeTimeout bounds one probe; 0 means 5 s.
	ProbeTimeout time.Duration
	// Log receives the front's and the children's log lines; nil means os.Stderr.
	Log io.Writer
}

// Defaults of the flags.
const (
	DefaultRegistryConfig = "/etc/docker/registry/config.yml"
	DefaultListen         = ":5000"
	DefaultRunDir         = "/run/bkcache"
	DefaultRegistryBin    = "/bin/registry"
)

// ParseFlags reads the front's flags (the arguments after "front").
func ParseFlags(args []string) (Options, error) {
	var o Options
	var rateFlag, sizeFlag, maxFlag string
	fs := flag.NewFlagSet("docker-bkcache front", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.RegistryConfig, "registry-config", DefaultRegistryConfig, "registry:2 config file")
	fs.StringVar(&o.Listen, "listen", DefaultListen, "address clients connect to")
	fs.StringVar(&o.MetricsListen, "metrics-listen", "", "address of /bkcache/status, /metrics and /debug/vars (empty: none)")
	fs.StringVar(&o.RunDir, "run-dir", DefaultRunDir, "directory for the registry children's sockets and configs")
	fs.StringVar(&o.RegistryBin, "registry-bin", DefaultRegistryBin, "registry:2 binary")
	fs.StringVar(&rateFlag, "upstream-rate", "0", "cap on upstream blob bytes per second, e.g. 20M (0: none)")
	fs.StringVar(&sizeFlag, "max-size", "0", "the store's budget, e.g. 500G (0: none)")
	fs.StringVar(&maxFlag, "max-blob-size", "16G", "cap on a blob download of undeclared size, e.g. 4G")
	fs.BoolVar(&o.StoredViaChild, "stored-via-child", false, "serve stored blobs through the local registry child (benchmarks)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("front: %w (flags: --registry-config, --listen, --metrics-listen, --run-dir, --registry-bin, --upstream-rate, --max-size, --max-blob-size)", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("front: unexpected argument %q", fs.Arg(0))
	}
	r, err := ParseRate(rateFlag)
	if err != nil {
		return o, fmt.Errorf("front: --upstream-rate: %w", err)
	}
	o.UpstreamRate = r
	if o.MaxSize, err = ParseSize(sizeFlag); err != nil {
		return o, fmt.Errorf("front: --max-size: %w", err)
	}
	if o.MaxBlobSize, err = ParseSize(maxFlag); err != nil || o.MaxBlobSize == 0 {
		return o, fmt.Errorf("front: --max-blob-size %q: give bytes, e.g. 4G or 500000000", maxFlag)
	}
	if o.Listen == "" {
		return o, errors.New("front: --listen must not be empty")
	}
	return o, nil
}

// maxBlobSize is the cap on a download of undeclared size.
func (o Options) maxBlobSize() int64 {
	if o.MaxBlobSize > 0 {
		return o.MaxBlobSize
	}
	return blobfetch.DefaultMaxSize
}
