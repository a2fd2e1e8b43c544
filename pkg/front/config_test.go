package front

import (
	"testing"

	"sigs.k8s.io/yaml"
)

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
