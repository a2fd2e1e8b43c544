package front

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestParseRate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		err  string
	}{
		{"0", 0, ""},
		{"500000", 500000, ""},
		{"20M", 20 << 20, ""},
		{"20m", 20 << 20, ""},
		{"512K", 512 << 10, ""},
		{"512KiB", 512 << 10, ""},
		{"20MB", 20 << 20, ""},
		{"1.5G", 3 << 29, ""},
		{"2M/s", 2 << 20, ""},
		{"", 0, "empty rate"},
		{"-1", 0, `"-1"`},
		{"20X", 0, `"20X"`},
		{"fast", 0, `"fast"`},
		{"M", 0, `"M"`},
		{"0.5", 0, "below 1 byte"},
		{"20T", 0, `"20T"`},
	} {
		got, err := ParseRate(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseRate(%q) = %d, %v; want an error containing %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := ParseFlags([]string{"--listen", ":5500", "--metrics-listen", "127.0.0.1:5501", "--upstream-rate", "20M"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen != ":5500" || o.MetricsListen != "127.0.0.1:5501" || o.UpstreamRate != 20<<20 ||
		o.RegistryConfig != DefaultRegistryConfig || o.RunDir != DefaultRunDir || o.RegistryBin != DefaultRegistryBin {
		t.Errorf("%+v", o)
	}
	for _, bad := range [][]string{{"--upstream-rate", "lots"}, {"--nope"}, {"extra"}, {"--listen", ""}} {
		if _, err := ParseFlags(bad); err == nil {
			t.Errorf("ParseFlags(%q) accepted", bad)
		}
	}
}

func TestRanges(t *testing.T) {
	const size = 1000
	for _, tt := range []struct {
		h                    string
		kind                 rangeKind
		probe                bool
		start, end           int64
		partial, satisfiable bool
	}{
		{"", rangeNone, false, 0, size, false, true},
		{"bytes=0-0", rangeSingle, true, 0, 1, true, true},
		{"bytes=10-19", rangeSingle, true, 10, 20, true, true},
		{"bytes=990-2000", rangeSingle, true, 990, size, true, true},
		{"bytes=10-", rangeSingle, false, 10, size, true, true},
		{"bytes=-100", rangeSingle, true, 900, size, true, true},
		{"bytes=-5000", rangeSingle, true, 0, size, true, true},
		{"bytes=-0", rangeSingle, true, 0, 0, false, false},
		{"bytes=1000-", rangeSingle, false, 0, 0, false, false},
		{"bytes=0-70000", rangeSingle, false, 0, size, true, true},
		{"bytes=0-1,5-6", rangeMulti, false, 0, size, false, true},
		{"bytes=9-1", rangeNone, false, 0, size, false, true},
		{"items=0-1", rangeNone, false, 0, size, false, true},
		{"bytes=x-1", rangeNone, false, 0, size, false, true},
		{"bytes=0-1,x", rangeNone, false, 0, size, false, true},
	} {
		r := parseRange(tt.h)
		start, end, partial, ok := r.resolve(size)
		if r.kind != tt.kind || r.probeSized() != tt.probe || ok != tt.satisfiable || (ok && (start != tt.start || end != tt.end || partial != tt.partial)) {
			t.Errorf("%q: kind %d probe %v -> [%d,%d) partial %v ok %v", tt.h, r.kind, r.probeSized(), start, end, partial, ok)
		}
	}
}

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, tt := range []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: "base"}},
		{"/v2/_catalog", route{kind: "catalog"}},
		{"/v2/library/busybox/blobs/" + d, route{kind: "blob", repo: "library/busybox", ref: d}},
		{"/v2/a/blobs/b/blobs/" + d, route{kind: "blob", repo: "a/blobs/b", ref: d}},
		{"/v2/a/b/c/manifests/v1.2", route{kind: "manifest", repo: "a/b/c", ref: "v1.2"}},
		{"/v2/a/blobs/uploads/", route{kind: "upload", repo: "a"}},
		{"/v2/a/tags/list", route{kind: "tags", repo: "a"}},
		{"/v2/../etc/blobs/" + d, route{}},
		{"/v2/UPPER/blobs/" + d, route{}},
	} {
		if got := parseRoute(tt.path); got != tt.want {
			t.Errorf("parseRoute(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

func TestChildConfigs(t *testing.T) {
	cfg, err := parseRegistryConfig("config.yml", []byte(`version: 0.1
log: {fields: {service: registry}}
storage: {filesystem: {rootdirectory: /var/lib/registry}, delete: {enabled: true}, cache: {blobdescriptor: inmemory}}
http: {addr: ":5000", secret: s3, tls: {certificate: /c.pem, key: /k.pem}, debug: {addr: ":5001"}}
auth: {htpasswd: {realm: r, path: /htpasswd}}
proxy: {remoteurl: "https://hub.bktencent.com/some/path", username: u, password: p}
notifications: {endpoints: []}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.String() != "https://hub.bktencent.com" || cfg.TLSCert != "/c.pem" || cfg.Htpasswd != "/htpasswd" || cfg.Username != "u" {
		t.Errorf("parsed %+v", cfg)
	}
	read := func(kind childKind) map[string]any {
		b, err := cfg.childConfig(kind, "/run/bkcache/"+string(kind)+".sock", "127.0.0.1:41000")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	p, l := read(proxyChild), read(localChild)
	for kind, m := range map[childKind]map[string]any{proxyChild: p, localChild: l} {
		if str(m, "http", "net") != "unix" || str(m, "http", "addr") != "/run/bkcache/"+string(kind)+".sock" ||
			sub(m, "http", "tls") != nil || m["auth"] != nil || str(m, "http", "secret") != "s3" || m["notifications"] == nil {
			t.Errorf("%s child config: %v", kind, m)
		}
	}
	if str(p, "proxy", "remoteurl") == "" || str(p, "http", "debug", "addr") != "127.0.0.1:41000" || str(p, "http", "debug", "prometheus", "enabled") != "true" ||
		str(p, "storage", "delete", "enabled") != "false" {
		t.Errorf("proxy child config: %v", p)
	}
	if l["proxy"] != nil || sub(l, "http", "debug") != nil || str(l, "storage", "delete", "enabled") != "true" || sub(l, "storage", "cache") != nil || sub(p, "storage", "cache") != nil {
		t.Errorf("local child config: %v", l)
	}
	// The parsed document is not changed by rendering.
	if sub(cfg.raw, "http", "tls") == nil || cfg.raw["auth"] == nil {
		t.Error("rendering changed the parsed config")
	}

	for _, bad := range []string{
		"storage: {filesystem: {rootdirectory: /x}}\n",
		"proxy: {remoteurl: ftp://x}\nstorage: {filesystem: {rootdirectory: /x}}\n",
		"proxy: {remoteurl: https://x}\nstorage: {s3: {bucket: b}}\n",
		"proxy: {remoteurl: https://x}\nauth: {token: {realm: r}}\n",
		"proxy: {remoteurl: https://x}\nhttp: {tls: {certificate: /c}}\n",
	} {
		if _, err := parseRegistryConfig("c.yml", []byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
