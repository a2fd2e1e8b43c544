package cache

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

func TestDecide(t *testing.T) {
	const sumA, sumB = "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"
	front := Spec{}.WithDefaults()
	plain := front
	plain.Layout = LayoutPlain
	restarted := front
	restarted.Restart = "no"
	config := []byte("rendered config\n")

	desired := func(s Spec, sum string) Desired {
		labels, err := specLabels(s, config, sum)
		if err != nil {
			t.Fatal(err)
		}
		return Desired{Spec: s, Config: config, Labels: labels}
	}
	// ours makes the inspect data of a container an earlier Up created for d.
	ours := func(d Desired, running bool) *container.InspectResponse {
		return &container.InspectResponse{
			Config: &container.Config{Labels: maps.Clone(d.Labels)},
			State:  &container.State{Running: running},
		}
	}
	// older is a plain cache made by bkcache before the front: no layout
	// labels, a spec JSON without the layout field.
	older := func() *container.InspectResponse {
		s := front
		s.Layout = ""
		raw, _ := json.Marshal(s)
		var m map[string]any
		json.Unmarshal(raw, &m)
		delete(m, "layout")
		raw, _ = json.Marshal(m)
		return &container.InspectResponse{
			Config: &container.Config{Labels: map[string]string{LabelManaged: "true", LabelName: "bkhub", LabelSpec: string(raw), LabelHash: "old"}},
			State:  &container.State{Running: true},
		}
	}
	// guides is the container the guide's script runs: registry:2's entrypoint
	// serving the mounted config, data at /var/lib/registry.
	guides := &container.InspectResponse{
		Path:   "/entrypoint.sh",
		Args:   []string{"/etc/docker/registry/config.yml"},
		Config: &container.Config{Image: "hub.bktencent.com/library/registry:2"},
		State:  &container.State{Running: true},
		Mounts: []container.MountPoint{
			{Source: "/etc/docker/registry/bkhub.yaml", Destination: containerConfigPath},
			{Source: "/var/lib/registry-bkhub", Destination: containerDataDir},
		},
	}
	// stranger has the cache's name but is something else (an nginx named proxy-bkhub).
	stranger := &container.InspectResponse{
		Path:   "/docker-entrypoint.sh",
		Config: &container.Config{Image: "nginx:1.25"},
		State:  &container.State{Running: true},
	}
	replacing := desired(front, sumA)
	replacing.ReplaceForeign = true
	// listening is a front an earlier bkcache made: always a metrics
	// listener, and a registry config with a debug section.
	listening := ours(desired(front, sumA), true)
	listening.Config.Entrypoint = []string{"/bkcache/docker-bkcache", "front", "--listen", ":5000", "--metrics-listen", ":5001"}
	asked := front
	asked.MetricsPort = 15999

	tests := []struct {
		name    string
		cur     Current
		want    Desired
		action  string
		changes string // joined with "; "; "" checks for none
		write   bool
		replace bool
		create  bool
		start   bool
	}{
		{"nothing there", Current{}, desired(front, sumA), ActionCreated, "", true, false, true, false},
		{"config left by a removed container", Current{Config: config}, desired(front, sumA), ActionCreated, "", false, false, true, false},
		{"same, running", Current{Container: ours(desired(front, sumA), true), Config: config}, desired(front, sumA), ActionUnchanged, "", false, false, false, false},
		{"same, stopped", Current{Container: ours(desired(front, sumA), false), Config: config}, desired(front, sumA), ActionStarted, "", false, false, false, true},
		{"same plain, running", Current{Container: ours(desired(plain, ""), true), Config: config}, desired(plain, ""), ActionUnchanged, "", false, false, false, false},
		{"flag changed", Current{Container: ours(desired(front, sumA), true), Config: config}, desired(restarted, sumA), ActionRecreated, "restart: always -> no", false, true, true, false},
		{"config file edited by hand", Current{Container: ours(desired(front, sumA), true), Config: []byte("edited")}, desired(front, sumA), ActionRecreated, "registry config changed (/etc/docker/registry/bkhub.yaml)", true, true, true, false},
		{"new plugin version", Current{Container: ours(desired(front, sumA), true), Config: config}, desired(front, sumB), ActionRecreated, "front binary: aaaaaaaaaaaa -> bbbbbbbbbbbb (a new plugin version)", false, true, true, false},
		{"plain to front", Current{Container: ours(desired(plain, ""), true), Config: config}, desired(front, sumA), ActionConverted, "converted: plain -> front", false, true, true, false},
		{"front to plain", Current{Container: ours(desired(front, sumA), true), Config: config}, desired(plain, ""), ActionConverted, "converted: front -> plain", false, true, true, false},
		{"earlier bkcache, plain", Current{Container: older(), Config: config}, desired(front, sumA), ActionConverted, "converted: plain -> front", false, true, true, false},
		{"earlier bkcache, kept plain", Current{Container: older(), Config: config}, desired(plain, ""), ActionRecreated, "container labels from an earlier bkcache version", false, true, true, false},
		{"guide's container", Current{Container: guides, Config: []byte("guide's config")}, desired(front, sumA), ActionAdopted,
			"container made without bkcache labels (the guide's script): recreated with its data dir /var/lib/registry-bkhub; converted: plain -> front", true, true, true, false},
		{"guide's container, kept plain", Current{Container: guides}, desired(plain, ""), ActionAdopted,
			"container made without bkcache labels (the guide's script): recreated with its data dir /var/lib/registry-bkhub", true, true, true, false},
		{"a stranger, --replace", Current{Container: stranger}, replacing, ActionAdopted,
			"container of image nginx:1.25 replaced (--replace); converted: plain -> front", true, true, true, false},
		{"earlier front with a metrics listener", Current{Container: listening, Config: []byte("config with http.debug")}, desired(front, sumA), ActionRecreated,
			"metrics listener removed: status, verify and prune read the front on the cache's port (pass --metrics-port PORT to keep one for Prometheus)", true, true, true, false},
		{"earlier front, --metrics-port given", Current{Container: listening, Config: []byte("config with http.debug")}, desired(asked, sumA), ActionRecreated,
			"metricsPort: (none) -> 15999", true, true, true, false},
		{"stopped and changed", Current{Container: ours(desired(front, sumA), false), Config: config}, desired(restarted, sumA), ActionRecreated, "restart: always -> no", false, true, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.cur, tc.want)
			if p.Refuse != nil {
				t.Fatalf("refused: %v", p.Refuse)
			}
			want(t, "action", p.Action, tc.action)
			want(t, "changes", strings.Join(p.Changes, "; "), tc.changes)
			want(t, "write config", p.WriteConfig, tc.write)
			want(t, "replace", p.Replace, tc.replace)
			want(t, "create", p.Create, tc.create)
			want(t, "start", p.Start, tc.start)
		})
	}
}

// TestDecideRefusesStrangers: a container under the cache's name that is not
// a registry:2 cache is never replaced without --replace, and the refusal names
// its image and what to do.
func TestDecideRefusesStrangers(t *testing.T) {
	want := Desired{Spec: Spec{}.WithDefaults(), Config: []byte("c")}
	for _, c := range []*container.InspectResponse{
		{Path: "/docker-entrypoint.sh", Config: &container.Config{Image: "nginx:1.25"}},
		// A registry with no data mount at /var/lib/registry is not the guide's either.
		{Path: "/entrypoint.sh", Config: &container.Config{Image: "registry:2"},
			Mounts: []container.MountPoint{{Source: "/etc/x.yaml", Destination: containerConfigPath}}},
	} {
		p := Decide(Current{Container: c}, want)
		if p.Refuse == nil || p.Create || p.Replace {
			t.Errorf("%s: plan %+v, want a refusal that changes nothing", c.Config.Image, p)
			continue
		}
		for _, w := range []string{c.Config.Image, "--replace", "proxy-bkhub"} {
			if !strings.Contains(p.Refuse.Error(), w) {
				t.Errorf("refusal %q does not name %q", p.Refuse, w)
			}
		}
	}
}
