package clustertest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseEnv(t *testing.T) {
	const common = `export KUBECONFIG=/s/admin.kubeconfig
export NODE_NAME=vm
export CONTAINERD_SOCK=/s/c.sock
export CONTAINERD_CONFIG=/s/config.toml
export CERTS_DIR=/s/certs.d
export NODE_IMAGE=bkcache.test/busybox:1
export CLUSTER_DIR=/s
`
	for _, tc := range []struct {
		name, out string
		want      []Node
		certs     string
		wantErr   string
	}{
		{
			name:  "a scripts/cluster from before several nodes",
			out:   common,
			want:  []Node{{Name: "vm", IP: "127.0.0.1", ContainerdSock: "/s/c.sock"}},
			certs: "/s/certs.d",
		},
		{
			name:  "one node",
			out:   common + "export NODE_CERTS_DIR=/s/certs.d\nexport NODES=1\nexport NODE_1_NAME=vm NODE_1_IP=127.0.0.1 NODE_1_SOCK=/s/c.sock\n",
			want:  []Node{{Name: "vm", IP: "127.0.0.1", ContainerdSock: "/s/c.sock"}},
			certs: "/s/certs.d",
		},
		{
			name: "three nodes",
			out: common + "export NODE_CERTS_DIR=/etc/containerd/certs.d\nexport NODES=3\n" +
				"export NODE_1_NAME=vm NODE_1_IP=127.0.0.1 NODE_1_SOCK=/s/1.sock\nexport NODE_1_ROOT=/s/nodes/1/root\n" +
				"export NODE_2_NAME=bkcache-node-2 NODE_2_IP=127.0.0.2 NODE_2_SOCK=/s/2.sock\nexport NODE_2_ROOT=/s/nodes/2/root\n" +
				"export NODE_3_NAME=bkcache-node-3 NODE_3_IP=127.0.0.3 NODE_3_SOCK=/s/3.sock\nexport NODE_3_ROOT=/s/nodes/3/root\n" +
				"export RESTART_COMMAND=/run/bkcache-node/restart-containerd\n",
			want: []Node{
				{Name: "vm", IP: "127.0.0.1", ContainerdSock: "/s/1.sock", Root: "/s/nodes/1/root"},
				{Name: "bkcache-node-2", IP: "127.0.0.2", ContainerdSock: "/s/2.sock", Root: "/s/nodes/2/root"},
				{Name: "bkcache-node-3", IP: "127.0.0.3", ContainerdSock: "/s/3.sock", Root: "/s/nodes/3/root"},
			},
			certs: "/etc/containerd/certs.d",
		},
		{name: "a node missing", out: common + "export NODES=2\nexport NODE_1_NAME=vm\n", wantErr: "NODE_2_NAME"},
		{name: "quoted value", out: common + "export NODE_NAME='a b'\n", wantErr: "quoted"},
		{name: "no kubeconfig", out: strings.Replace(common, "export KUBECONFIG=/s/admin.kubeconfig\n", "", 1), wantErr: "KUBECONFIG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := parseEnv("cluster", []byte(tc.out))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(env.Nodes, tc.want) || env.NodeCertsDir != tc.certs {
				t.Errorf("nodes %+v certs %q, want %+v %q", env.Nodes, env.NodeCertsDir, tc.want, tc.certs)
			}
		})
	}
}

func TestNodeHostPath(t *testing.T) {
	if got := (Node{}).HostPath("/etc/containerd/config.toml"); got != "/etc/containerd/config.toml" {
		t.Errorf("this machine's node: %s", got)
	}
	if got := (Node{Root: "/s/nodes/2/root"}).HostPath("/etc/containerd/config.toml"); got != "/s/nodes/2/root/etc/containerd/config.toml" {
		t.Errorf("node 2: %s", got)
	}
}
