package cache

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// ValidateName checks a cache name before it names a container or a file:
// the same rule `up` applies, so no name can climb out of the config dir.
func ValidateName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("invalid cache name %q: use lower-case letters, digits, '.', '_' or '-', starting with a letter or digit (at most 63)", name)
	}
	return nil
}

// Stranger is a container that carries bkcache's labels but that bkcache
// cannot recognise as a cache it made; commands that act on every cache skip
// it with a note instead of failing or touching it.
type Stranger struct {
	Container string `json:"container"`
	Image     string `json:"image"`
	Reason    string `json:"reason"`
}

func (s Stranger) String() string {
	return fmt.Sprintf("skipped container %s (image %s): %s; it is not a cache bkcache made", s.Container, s.Image, s.Reason)
}

// Names lists the caches bkcache made on this engine. A container counts only
// when bkcache's labels were set on the container itself (not inherited from
// its image, which anyone can build), its name is proxy-NAME for a valid NAME
// that its labels repeat, and its spec label reads back. Anything else with
// the labels is returned as a Stranger.
func Names(ctx context.Context, eng Engine) ([]string, []Stranger, error) {
	list, err := eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelManaged+"=true")})
	if err != nil {
		return nil, nil, engineError(eng, err)
	}
	var names []string
	var strangers []Stranger
	imageLabels := map[string]map[string]string{}
	for _, c := range list.Items {
		cname := strings.TrimPrefix(firstName(c.Names), "/")
		if _, seen := imageLabels[c.ImageID]; !seen {
			imageLabels[c.ImageID] = nil
			if res, err := eng.ImageInspect(ctx, c.ImageID); err == nil && res.Config != nil {
				imageLabels[c.ImageID] = res.Config.Labels
			}
		}
		if reason := notOurs(cname, c.Labels, imageLabels[c.ImageID]); reason != "" {
			strangers = append(strangers, Stranger{Container: cname, Image: c.Image, Reason: reason})
			continue
		}
		names = append(names, c.Labels[LabelName])
	}
	slices.Sort(names)
	return names, strangers, nil
}

// notOurs says why a container with bkcache's labels is not one of its caches, or "".
func notOurs(cname string, labels, imageLabels map[string]string) string {
	name := labels[LabelName]
	switch {
	case imageLabels[LabelManaged] != "":
		return "its bkcache labels come from its image"
	case ValidateName(name) != nil:
		return fmt.Sprintf("its label %s=%q is not a cache name", LabelName, name)
	case cname != ContainerName(name):
		return fmt.Sprintf("its name is not %s", ContainerName(name))
	}
	spec, ok := specFromLabels(labels)
	if !ok || spec.Name != name {
		return "its spec label does not read back"
	}
	return ""
}

// guideRegistry says whether a container without bkcache's labels is a
// registry:2 cache as the BlueKing guide's script runs it: the registry binary
// (registry:2's entrypoint or the local image's) serving the mounted config, with
// its data at /var/lib/registry. Only such a container is adopted by `up`.
func guideRegistry(c *container.InspectResponse) (bool, string) {
	var why []string
	runs := path.Base(c.Path)
	if runs != "registry" && runs != "entrypoint.sh" && runs != "docker-registry" {
		why = append(why, "it runs "+c.Path)
	}
	if mountSource(*c, containerDataDir) == "" {
		why = append(why, "it has no data mount at "+containerDataDir)
	}
	if mountSource(*c, containerConfigPath) == "" {
		why = append(why, "it has no config mount at "+containerConfigPath)
	}
	return len(why) == 0, strings.Join(why, ", ")
}

// containerImage names a container's image for messages.
func containerImage(c *container.InspectResponse) string {
	if c.Config != nil && c.Config.Image != "" {
		return c.Config.Image
	}
	return c.Image
}
