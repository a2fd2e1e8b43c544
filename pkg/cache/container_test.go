package cache

import (
	"fmt"
	"strings"
	"testing"
)

func TestContainerOptions(t *testing.T) {
	bridge := Spec{Bind: "10.0.0.5", Layout: LayoutPlain}.WithDefaults()
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

	if len(opts.Config.Entrypoint) != 0 || len(opts.Config.Cmd) != 0 {
		t.Errorf("the plain layout overrides the image's entrypoint: %v %v", opts.Config.Entrypoint, opts.Config.Cmd)
	}

	front := Spec{Bind: "10.0.0.5", UpstreamRate: 20 << 20}.WithDefaults()
	opts, err = containerOptions(front, labels)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "front entrypoint", strings.Join(opts.Config.Entrypoint, " "),
		"/bkcache/docker-bkcache front --registry-config /etc/docker/registry/config.yml --listen :5000 --upstream-rate 20971520")
	want(t, "front publishes only the cache port", fmt.Sprint(opts.HostConfig.PortBindings), "map[5000/tcp:[{10.0.0.5 5500}]]")
	want(t, "front exposes only the cache port", fmt.Sprint(opts.Config.ExposedPorts), "map[5000/tcp:{}]")

	asked := Spec{MetricsPort: 15999}.WithDefaults()
	opts, _ = containerOptions(asked, labels)
	want(t, "front with --metrics-port", strings.Join(opts.Config.Entrypoint[4:], " "),
		"--listen :5000 --metrics-listen :5001 --upstream-rate 0")
	want(t, "metrics port on loopback", fmt.Sprint(opts.HostConfig.PortBindings), "map[5000/tcp:[{0.0.0.0 5500}] 5001/tcp:[{127.0.0.1 15999}]]")
	want(t, "front binds", strings.Join(opts.HostConfig.Binds, " "),
		"/etc/docker/registry/bkhub.yaml:/etc/docker/registry/config.yml:ro /var/lib/registry-bkhub:/var/lib/registry /etc/docker/registry/bkhub.front:/bkcache/docker-bkcache:ro")
	want(t, "front run dir", opts.HostConfig.Tmpfs["/run/bkcache"], "rw,mode=0700,size=16m")

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
	want(t, "host-network front", strings.Join(opts.Config.Entrypoint[3:], " "),
		"/etc/docker/registry/config.yml --listen :5500 --upstream-rate 0")
	want(t, "host-network front's metrics port", host.MetricsPort, 0)
	bound := Spec{Network: NetworkHost, Bind: "10.0.0.5", Port: 5600, MetricsPort: 15700}.WithDefaults()
	opts, _ = containerOptions(bound, labels)
	want(t, "bound host-network front", strings.Join(opts.Config.Entrypoint[4:], " "),
		"--listen 10.0.0.5:5600 --metrics-listen 127.0.0.1:15700 --upstream-rate 0")
	plainHost := Spec{Network: NetworkHost, Port: 5600, Layout: LayoutPlain}.WithDefaults()
	want(t, "registry:2 alone keeps PORT+10000", plainHost.MetricsPort, 15600)
}
