package front

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/bkcache/bkcache/pkg/atomicfile"
	"github.com/bkcache/bkcache/pkg/version"
)

// Server is a running front: listeners, children, flights.
type Server struct {
	opts     Options
	cfg      *registryConfig
	lines    *lineLog
	logger   *log.Logger
	up       *upstream
	proxy    *child
	local    *child
	store    storage
	flights  *flights
	seen     *seen          // blob sizes and repositories from the manifests served
	limiter  *sharedLimiter // nil: no upstream rate cap
	auth     *htpasswd
	counters counters

	// Months of operation: last-served records, blobs in use, store
	// failures, prune and the budget (served.go, storestate.go, prune.go).
	served     *servedLog
	inUse      inUse
	stores     storeState
	pruneMu    sync.Mutex
	budget     chan struct{}
	adminToken string

	extraHeaders map[string][]string // the config's http.headers, on blobs served from storage

	debugAddr string // the proxy child's debug listener (127.0.0.1:PORT)
	incoming  string // <rootdirectory>/bkcache/incoming

	onlineRP, offlineRP, writeRP, blobRP http.Handler
	ownMux                               http.Handler      // /bkcache/… on the client listener
	onlineRT                             http.RoundTripper // onlineRP's: manifest calls share it
	manifests                            manifestCalls

	ln, metricsLn   net.Listener
	srv, metricsSrv *http.Server
	authFwd         *http.Server       // the proxy child's upstream when it has credentials (authforward.go)
	ctx             context.Context    // children and watchers: ends last
	cancel          context.CancelFunc //
	fetchCtx        context.Context    // upstream downloads: end first at Close
	cancelFetches   context.CancelFunc
	wg              sync.WaitGroup
	closeOnce       sync.Once
}

// Main is `docker-bkcache front ARGS…`: it runs until SIGTERM or SIGINT and
// returns the process exit code.
func Main(args []string) int {
	opts, err := ParseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "bkcache front:", err)
		return 1
	}
	return 0
}

// Run starts the front and serves until ctx ends; then it stops the children.
func Run(ctx context.Context, opts Options) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return err
	}
	<-ctx.Done()
	s.logger.Printf("stopping")
	s.Close()
	return nil
}

// New reads the registry config and prepares the run dir; it starts nothing.
func New(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.RegistryConfig == "" {
		opts.RegistryConfig = DefaultRegistryConfig
	}
	if opts.RunDir == "" {
		opts.RunDir = DefaultRunDir
	}
	if opts.RegistryBin == "" {
		opts.RegistryBin = DefaultRegistryBin
	}
	if opts.UpstreamRate < 0 {
		return nil, fmt.Errorf("upstream rate %d is negative", opts.UpstreamRate)
	}
	cfg, err := readRegistryConfig(opts.RegistryConfig)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(opts.RegistryBin); err != nil {
		return nil, fmt.Errorf("registry binary: %w (the cache image must have it; tests: apt-get install docker-registry)", err)
	}
	lines := &lineLog{w: opts.Log}
	s := &Server{
		opts:     opts,
		cfg:      cfg,
		lines:    lines,
		logger:   log.New(lines, "bkcache-front: ", log.LstdFlags|log.LUTC),
		store:    storage{root: filepath.Join(cfg.RootDir, "docker", "registry", "v2")},
		incoming: filepath.Join(cfg.RootDir, "bkcache", "incoming"),
	}
	s.flights = &flights{m: map[string]*flight{}, holders: map[string]string{}}
	s.served = newServedLog(filepath.Join(cfg.RootDir, "bkcache", servedFile))
	s.budget = make(chan struct{}, 1)
	if opts.MaxSize < 0 {
		return nil, fmt.Errorf("budget %d is negative", opts.MaxSize)
	}
	s.seen = newSeen()
	s.extraHeaders = cfg.headers()
	s.manifests.m, s.manifests.max = map[manifestKey]*manifestCall{}, manifestBufferMax
	if opts.UpstreamRate > 0 {
		s.limiter = newSharedLimiter(opts.UpstreamRate, int(min(max(opts.UpstreamRate/10, 1), 256<<10)), realClock{})
	}
	if cfg.Htpasswd != "" {
		s.auth = newHtpasswd(cfg.Htpasswd, cfg.Realm)
	}
	if s.up, err = newUpstream(cfg, opts, s.logger.Printf); err != nil {
		return nil, err
	}
	s.proxy = newChild(proxyChild, opts.RegistryBin, opts.RunDir, lines, s.logger.Printf)
	s.local = newChild(localChild, opts.RegistryBin, opts.RunDir, lines, s.logger.Printf)
	s.buildProxies()
	s.ownMux = s.metricsHandler()
	return s, nil
}

// Addr is the client listener's address once started.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// MetricsAddr is the metrics listener's address once started ("" when none).
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Start writes the children's configs, starts the local child (and the proxy
// child when the upstream answers), and serves. It returns once the local
// child answers, or with an error.
func (s *Server) Start(ctx context.Context) error {
	s.logger.Printf("bkcache front %s: upstream %s, storage %s, listening on %s", version.Version, s.up, s.cfg.RootDir, s.opts.Listen)
	if err := s.prepareDirs(); err != nil {
		return err
	}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	if s.ln, err = net.Listen("tcp", s.opts.Listen); err != nil {
		return fmt.Errorf("listen on %s: %w", s.opts.Listen, err)
	}
	if s.opts.MetricsListen != "" {
		if s.metricsLn, err = net.Listen("tcp", s.opts.MetricsListen); err != nil {
			s.ln.Close()
			return fmt.Errorf("metrics listen on %s: %w", s.opts.MetricsListen, err)
		}
	}
	// Picked once our own listeners hold their ports, so it cannot be one of them.
	if s.debugAddr, err = freeLoopbackAddr(); err != nil {
		return err // Run's Close closes the listeners
	}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if s.cfg.childRemote, err = s.startAuthForwarder(); err != nil {
		return err
	}
	for _, c := range []*child{s.proxy, s.local} {
		data, err := s.cfg.childConfig(c.kind, c.sock, s.debugAddr)
		if err != nil {
			return err
		}
		// 0600: it carries the upstream password.
		if err := atomicfile.WriteFile(c.config, data, 0o600); err != nil {
			return err
		}
	}
	s.fetchCtx, s.cancelFetches = context.WithCancel(s.ctx)

	s.up.probeAndReport(ctx) //nolint:errcheck // decides the first mode
	s.goRun(func() { s.up.watch(s.ctx) })
	s.goRun(func() { s.served.flushLoop(s.ctx, servedFlushInterval, s.logger.Printf) })
	if s.opts.MaxSize > 0 {
		s.goRun(func() { s.budgetLoop(s.ctx) })
		s.budgetKick()
	}
	s.goRun(func() { s.local.supervise(s.ctx, func() bool { return true }, nil) })
	s.goRun(func() {
		s.proxy.supervise(s.ctx, func() bool { online, _, _ := s.up.Online(); return online }, s.up.Changed)
	})

	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: time.Minute, IdleTimeout: 5 * time.Minute, ErrorLog: s.logger, TLSConfig: tlsCfg}
	s.goRun(func() {
		var err error
		if tlsCfg != nil {
			err = s.srv.ServeTLS(s.ln, "", "")
		} else {
			err = s.srv.Serve(s.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Printf("client listener: %v", err)
		}
	})
	if s.metricsLn != nil {
		s.metricsSrv = &http.Server{Handler: s.metricsHandler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: s.logger}
		s.goRun(func() { s.metricsSrv.Serve(s.metricsLn) }) //nolint:errcheck // ends with Close
	}
	if !s.local.waitReady(ctx, time.Minute) {
		return fmt.Errorf("the registry local child did not answer on %s within a minute; see its log lines above", s.local.sock)
	}
	if online, _, _ := s.up.Online(); online {
		s.proxy.waitReady(ctx, 30*time.Second) // it may crash on a flaky upstream: the supervisor retries
	}
	return nil
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops serving and downloading, lets blobs already verified finish
// storing (a few seconds at most), stops the children and waits for them.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if s.cancelFetches != nil {
			s.cancelFetches()
			deadline := time.Now().Add(8 * time.Second) // docker stop kills after 10 s
			for s.flights.len() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
		}
		if s.cancel != nil {
			s.cancel()
		}
		if s.srv != nil {
			s.srv.Close()
		} else if s.ln != nil {
			s.ln.Close()
		}
		if s.authFwd != nil {
			s.authFwd.Close()
		}
		if s.metricsSrv != nil {
			s.metricsSrv.Close()
		} else if s.metricsLn != nil {
			s.metricsLn.Close()
		}
		s.wg.Wait()
		if s.served != nil {
			if err := s.served.save(); err != nil {
				s.logger.Printf("save last-served times: %v", err)
			}
		}
	})
}

// prepareDirs makes the run dir (0700) and empties the incoming dir of
// partial downloads a previous run left.
func (s *Server) prepareDirs() error {
	if err := os.MkdirAll(s.opts.RunDir, 0o700); err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	if err := os.MkdirAll(s.incoming, 0o700); err != nil {
		return fmt.Errorf("incoming dir beside the storage: %w", err)
	}
	left, _ := filepath.Glob(filepath.Join(s.incoming, "*.partial"))
	for _, p := range left {
		os.Remove(p)
	}
	// Blobs an interrupted prune had moved out of the storage.
	os.RemoveAll(filepath.Join(filepath.Dir(s.incoming), trashDir)) //nolint:errcheck // best effort
	if err := s.served.load(); err != nil {
		s.logger.Printf("%v", err)
	}
	if err := s.ensureAdminToken(); err != nil {
		return fmt.Errorf("write the admin token beside the storage: %w", err)
	}
	return nil
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	if s.cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("http.tls of the registry config: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if len(s.cfg.ClientCAs) > 0 {
		pool := x509.NewCertPool()
		for _, p := range s.cfg.ClientCAs {
			pem, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("http.tls.clientcas: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("http.tls.clientcas: no certificate in %s", p)
			}
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// freeLoopbackAddr picks a free 127.0.0.1 port for the proxy child's debug listener.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a debug port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
