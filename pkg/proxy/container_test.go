package proxy

import (
	"strings"
	"testing"
)

func TestContainerOptions(t *testing.T) {
	bridge := Spec{Bind: "10.0.0.5"}.WithDefaults()
	labels := map[string]string{LabelManaged: "true"}
	opts, err := containerOptions(bridge, labels)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "name", opts.Name, "proxy-bkhub")
	want(t, "network", string(opts.HostConfig.NetworkMode), "bridge")
	want(t, "restart", string(opts.HostConfig.RestartPolicy.Name), "always")
	binds := strings.Join(opts.HostConfig.Binds, " ")
	want(t, "binds", binds, "/etc/docker/registry/bkhub.yaml:/etc/docker/registry/config.yml:ro /var/lib/registry-bkhub:/var/lib/registry")
	found := map[string]string{}
	for port, bs := range opts.HostConfig.PortBindings {
		for _, b := range bs {
			found[port.String()] = b.HostIP.String() + ":" + b.HostPort
		}
	}
	want(t, "cache port", found["5000/tcp"], "10.0.0.5:5500")
	want(t, "metrics port stays on loopback", found["5001/tcp"], "127.0.0.1:")
	if len(opts.Config.Env) != 0 {
		t.Errorf("the container gets env %v; secrets must stay in the config file", opts.Config.Env)
	}

	host := Spec{Network: NetworkHost, Htpasswd: "/h", TLSCert: "/c", TLSKey: "/k"}.WithDefaults()
	opts, err = containerOptions(host, labels)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "host network", string(opts.HostConfig.NetworkMode), "host")
	want(t, "no published ports with host network", len(opts.HostConfig.PortBindings), 0)
	if b := strings.Join(opts.HostConfig.Binds, " "); !strings.Contains(b, "/c:"+containerTLSCertPath+":ro") || !strings.Contains(b, "/h:"+containerHtpasswdPath+":ro") {
		t.Errorf("TLS and htpasswd files are not mounted read-only: %s", b)
	}
}
