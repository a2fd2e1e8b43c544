package cache

import (
	"strings"
	"testing"
)

func TestNotOurs(t *testing.T) {
	spec := Spec{Name: "bkhub"}.WithDefaults()
	labels, err := specLabels(spec, []byte("c"), "")
	if err != nil {
		t.Fatal(err)
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range labels {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name, container string
		labels, image   map[string]string
		want            string // "" when ours
	}{
		{"ours", "proxy-bkhub", labels, nil, ""},
		{"labels from its image", "proxy-bkhub", labels, map[string]string{LabelManaged: "true"}, "come from its image"},
		{"a path for a name", "proxy-bkhub", with(LabelName, "../../etc"), nil, "is not a cache name"},
		{"another container's name", "web", labels, nil, "its name is not proxy-bkhub"},
		{"spec of another cache", "proxy-other", with(LabelName, "other"), nil, "does not read back"},
		{"no spec", "proxy-bkhub", with(LabelSpec, "{"), nil, "does not read back"},
	} {
		got := notOurs(tc.container, tc.labels, tc.image)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: notOurs = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"bkhub", "docker.io", "k8s_1", "a"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../victim", "a/b", ".hidden", "UPPER", strings.Repeat("a", 64), "x\n"} {
		if ValidateName(bad) == nil {
			t.Errorf("ValidateName(%q) accepted a name that could name a path", bad)
		}
	}
}
