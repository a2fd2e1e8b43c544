package cache

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

func containerOptions(spec Spec, labels map[string]string) (client.ContainerCreateOptions, error) {
	binds := []string{
		spec.ConfigPath() + ":" + containerConfigPath + ":ro",
		spec.DataDir + ":" + containerDataDir,
	}
	if spec.TLSCert != "" {
		binds = append(binds, spec.TLSCert+":"+containerTLSCertPath+":ro", spec.TLSKey+":"+containerTLSKeyPath+":ro")
	}
	if spec.Htpasswd != "" {
		binds = append(binds, spec.Htpasswd+":"+containerHtpasswdPath+":ro")
	}
	host := &container.HostConfig{
		Binds:         binds,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(spec.Restart)},
		NetworkMode:   container.NetworkMode(spec.Network),
	}
	cfg := &container.Config{Image: spec.Image, Labels: labels}
	if spec.Layout == LayoutFront {
		// The plugin's own binary is PID 1 and runs the image's /bin/registry as its children.
		host.Binds = append(host.Binds, spec.FrontPath()+":"+containerFrontPath+":ro")
		host.Tmpfs = map[string]string{containerRunDir: "rw,mode=0700,size=16m"}
		cfg.Entrypoint = frontCommand(spec)
	}
	if spec.Network == NetworkBridge {
		bind := netip.IPv4Unspecified()
		if spec.Bind != "" {
			addr, err := netip.ParseAddr(spec.Bind)
			if err != nil {
				return client.ContainerCreateOptions{}, fmt.Errorf("invalid --bind %q: %w", spec.Bind, err)
			}
			bind = addr
		}
		cachePort := network.MustParsePort(strconv.Itoa(containerPort) + "/tcp")
		host.PortBindings = network.PortMap{cachePort: {{HostIP: bind, HostPort: strconv.Itoa(spec.Port)}}}
		cfg.ExposedPorts = network.PortSet{cachePort: {}}
		if spec.Layout == LayoutPlain || spec.MetricsPort != 0 {
			// A metrics listener, on loopback only: asked for (--metrics-port),
			// or registry:2 alone's debug listener, the only source of its
			// status, on a port the engine picks.
			debugPort := network.MustParsePort(strconv.Itoa(containerDebugPort) + "/tcp")
			hostPort := ""
			if spec.MetricsPort != 0 {
				hostPort = strconv.Itoa(spec.MetricsPort)
			}
			host.PortBindings[debugPort] = []network.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: hostPort}}
			cfg.ExposedPorts[debugPort] = struct{}{}
		}
	}
	return client.ContainerCreateOptions{Name: spec.ContainerName(), Config: cfg, HostConfig: host}, nil
}

// frontCommand is the front's command line in the container: where clients
// connect, a metrics listener only when --metrics-port asks for one (the
// front's figures are on the cache's port; an unasked listener would be
// open, unguarded, to the other containers on the bridge), and the upstream
// rate. Nothing secret: the credentials stay in the registry config file.
func frontCommand(spec Spec) []string {
	listen, metrics := ":"+strconv.Itoa(containerPort), ""
	if spec.MetricsPort != 0 {
		metrics = ":" + strconv.Itoa(containerDebugPort)
	}
	if spec.Network == NetworkHost {
		listen = net.JoinHostPort(spec.Bind, strconv.Itoa(spec.Port))
		if spec.MetricsPort != 0 {
			metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.MetricsPort))
		}
	}
	args := []string{containerFrontPath, "front",
		"--registry-config", containerConfigPath,
		"--listen", listen,
	}
	if metrics != "" {
		args = append(args, "--metrics-listen", metrics)
	}
	args = append(args, "--upstream-rate", strconv.FormatInt(spec.UpstreamRate, 10))
	if spec.MaxSize > 0 { // only when set: a cache without a budget keeps its command line
		args = append(args, "--max-size", strconv.FormatInt(spec.MaxSize, 10))
	}
	return args
}

func mountSource(c container.InspectResponse, dest string) string {
	for _, m := range c.Mounts {
		if m.Destination == dest {
			return m.Source
		}
	}
	return ""
}

// portOf is the host port a cache container serves on.
func portOf(c container.InspectResponse) int {
	if c.Config != nil {
		if s, ok := specFromLabels(c.Config.Labels); ok {
			return s.Port
		}
	}
	if c.HostConfig != nil && c.HostConfig.NetworkMode.IsHost() {
		// A host-network registry listens where its config's http.addr says.
		return listenPort(mountSource(c, containerConfigPath))
	}
	if c.HostConfig != nil {
		for p, bindings := range c.HostConfig.PortBindings {
			if p.Num() == containerPort {
				for _, b := range bindings {
					if n, err := strconv.Atoi(b.HostPort); err == nil {
						return n
					}
				}
			}
		}
	}
	return 0
}

// checkPortFree names what holds the cache's port: another container (published
// or a host-network cache), or, on a local engine, any other process.
func checkPortFree(ctx context.Context, eng Engine, spec Spec, selfID string, selfHolds bool) error {
	list, err := eng.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return engineError(eng, err)
	}
	// The ports this cache will hold: its own and its metrics port.
	mine := map[int]string{spec.Port: "--port"}
	if spec.MetricsPort != 0 {
		mine[spec.MetricsPort] = "--metrics-port"
	}
	for _, c := range list.Items {
		if c.ID == selfID {
			continue
		}
		holder := strings.TrimPrefix(firstName(c.Names), "/")
		var theirs []int
		for _, p := range c.Ports {
			theirs = append(theirs, int(p.PublicPort))
		}
		if s, ok := specFromLabels(c.Labels); ok && s.Network == NetworkHost {
			theirs = append(theirs, s.Port, s.MetricsPort)
		}
		for _, port := range theirs {
			flag, clash := mine[port]
			if !clash || port == 0 {
				continue
			}
			advice := fmt.Sprintf("docker rm -f %s", holder)
			if other := c.Labels[LabelName]; other != "" {
				advice = fmt.Sprintf("docker bkcache down %s", other)
			}
			return fmt.Errorf("port %d is in use by container %s; pass %s or run %q", port, holder, flag, advice)
		}
	}
	if selfHolds || !strings.HasPrefix(eng.DaemonHost(), "unix://") {
		return nil
	}
	host := spec.Bind
	if spec.Network == NetworkBridge && (host == "0.0.0.0" || host == "::") {
		host = ""
	}
	addrs := map[int]string{spec.Port: host}
	if spec.MetricsPort != 0 {
		addrs[spec.MetricsPort] = "127.0.0.1" // metrics stay on loopback
	}
	for port, host := range addrs {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			flag := "--port"
			if port != spec.Port {
				flag = "--metrics-port"
			}
			return fmt.Errorf("port %d is in use by another process on this host (%v); pass %s or stop that process (ss -ltnp 'sport = :%d' names it)", port, err, flag, port)
		}
		l.Close()
	}
	return nil
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
