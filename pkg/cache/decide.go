package cache

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/moby/moby/api/types/container"
)

// What Up did to a cache.
const (
	ActionCreated   = "created"
	ActionRecreated = "recreated"
	ActionAdopted   = "adopted"
	ActionConverted = "converted"
	ActionStarted   = "started"
	ActionUnchanged = "unchanged"
)

// Current is what a cache is now: its container (nil when there is none) and
// the config file on the host (nil when there is none).
type Current struct {
	Container *container.InspectResponse
	Config    []byte
}

// Desired is what Up wants the cache to be: the defaulted spec, the config it
// renders and the container labels for both (specLabels).
type Desired struct {
	Spec   Spec
	Config []byte
	Labels map[string]string
	// ReplaceForeign lets Up replace a container under the cache's name that is
	// neither bkcache's nor the guide's registry:2 (--replace).
	ReplaceForeign bool
}

// Plan is what Up does to reach Desired from Current.
type Plan struct {
	Action  string
	Changes []string
	// WriteConfig: the config file on the host differs from the rendered one.
	WriteConfig bool
	// Replace: remove the existing container (its data stays) before Create.
	Replace bool
	// Create: create and start a new container.
	Create bool
	// Start: start the existing, stopped container as it is.
	Start bool
	// Refuse, when set, is why Up must change nothing.
	Refuse error
}

// Decide is Up's reconciliation, as a pure function of what is and what is
// wanted: create a missing cache; leave a matching running one alone; start a
// matching stopped one; adopt a container without bkcache labels (the guide's
// script); convert a cache of another layout; recreate one whose spec, config
// or front binary changed. Changes name what differs, for the user.
func Decide(cur Current, want Desired) Plan {
	p := Plan{WriteConfig: !bytes.Equal(cur.Config, want.Config)}
	c := cur.Container
	if c == nil {
		p.Action, p.Create = ActionCreated, true
		return p
	}
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	if _, managed := labels[LabelManaged]; !managed {
		guide, why := guideRegistry(c)
		if !guide && !want.ReplaceForeign {
			return Plan{Refuse: fmt.Errorf("container %s (image %s) is not a registry:2 cache bkcache can adopt: %s; pick another --name, remove it yourself, or pass --replace to replace it (its volumes are not deleted)",
				want.Spec.ContainerName(), containerImage(c), why)}
		}
		p.Action, p.Replace, p.Create = ActionAdopted, true, true
		p.Changes = []string{"container made without bkcache labels (the guide's script): recreated with its data dir " + want.Spec.DataDir}
		if !guide {
			p.Changes = []string{fmt.Sprintf("container of image %s replaced (--replace)", containerImage(c))}
		}
		if want.Spec.Layout != LayoutPlain {
			p.Changes = append(p.Changes, "converted: "+LayoutPlain+" -> "+want.Spec.Layout)
		}
		return p
	}
	if labels[LabelHash] == want.Labels[LabelHash] && !p.WriteConfig {
		if c.State != nil && c.State.Running {
			p.Action = ActionUnchanged
		} else {
			p.Action, p.Start = ActionStarted, true
		}
		return p
	}
	p.Replace, p.Create = true, true
	prev, _ := specFromLabels(labels)
	oldLayout := layoutOf(labels)
	if oldLayout != want.Spec.Layout {
		p.Action = ActionConverted
		p.Changes = append(p.Changes, "converted: "+oldLayout+" -> "+want.Spec.Layout)
	} else {
		p.Action = ActionRecreated
	}
	for _, d := range DiffSpecs(prev, want.Spec) {
		if !strings.HasPrefix(d, "layout: ") {
			p.Changes = append(p.Changes, d)
		}
	}
	if old, now := labels[LabelFront], want.Labels[LabelFront]; old != now && old != "" && now != "" {
		p.Changes = append(p.Changes, fmt.Sprintf("front binary: %s -> %s (a new plugin version)", short(old), short(now)))
	}
	if hadMetricsListener(c) && want.Spec.Layout == LayoutFront && want.Spec.MetricsPort == 0 {
		p.Changes = append(p.Changes, "metrics listener removed: status, verify and prune read the front on the cache's port (pass --metrics-port PORT to keep one for Prometheus)")
	}
	if len(p.Changes) == 0 && p.WriteConfig {
		p.Changes = []string{"registry config changed (" + want.Spec.ConfigPath() + ")"}
	}
	if len(p.Changes) == 0 {
		p.Changes = []string{"container labels from an earlier bkcache version"}
	}
	return p
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// hadMetricsListener: the container's front was started with a metrics
// listener (earlier bkcache versions always started one).
func hadMetricsListener(c *container.InspectResponse) bool {
	if c.Config == nil {
		return false
	}
	args := c.Config.Entrypoint
	for i, a := range args {
		if a == "--metrics-listen" && i+1 < len(args) && args[i+1] != "" {
			return true
		}
	}
	return false
}
