package helmfile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestValuesReachEveryLevel: --state-values-set and helmfiles[].values
// reach a helmfile two levels down that defines no environments.
func TestValuesReachEveryLevel(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml.gotmpl":          "environments:\n  prod:\n    values: [{team: blue}]\n---\nhelmfiles:\n  - path: mid/helmfile.yaml.gotmpl\n    values:\n      - team: {{ .Values.team }}\n",
		"mid/helmfile.yaml.gotmpl":      "helmfiles:\n  - path: leaf/helmfile.yaml.gotmpl\n    values:\n      - site: {{ .Values.team }}-{{ .Values.zone }}\n",
		"mid/leaf/helmfile.yaml.gotmpl": "releases:\n  - name: leaf-{{ .Values.site }}\n    chart: " + chart + "\n    values:\n      - zone: {{ .Values.zone }}\n",
	})
	rels, err := LoadReleases(context.Background(), dir, LoadOptions{Environment: "prod", StateValuesSet: []string{"zone=eu"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Name != "leaf-blue-eu" || rels[0].Values["zone"] != "eu" {
		t.Fatalf("releases %+v", rels)
	}
	if rels[0].StateValues["team"] != "blue" {
		t.Errorf("leaf state values %v: the top's helmfiles[].values did not reach it", rels[0].StateValues)
	}
}

// TestInherits: `inherits:` passes the parent's environment values,
// helmDefaults and apiVersions; the child's own win.
func TestInherits(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml":     "environments:\n  prod:\n    values: [{registry: reg.prod, team: blue}]\nhelmDefaults:\n  templateArgs: [--api-versions=gateway.networking.k8s.io/v1, --kube-version=v1.31.0]\napiVersions: [example.com/v1]\nhelmfiles:\n  - path: child.yaml.gotmpl\n    inherits: [environments, helmDefaults, apiVersions]\n  - path: other.yaml\n",
		"child.yaml.gotmpl": "environments:\n  prod:\n    values: [{team: red}]\n---\nreleases:\n  - name: child-{{ .Values.team }}\n    chart: " + chart + "\n    values:\n      - image: {registry: {{ .Values.registry }}}\n",
		"other.yaml":        "environments:\n  default: {}\nreleases:\n  - name: other\n    chart: " + chart + "\n",
	})
	var notices []string
	rels, err := LoadReleases(context.Background(), dir, LoadOptions{Environment: "prod", Notify: func(n Notice) { notices = append(notices, n.String()) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Name != "child-red" {
		t.Fatalf("releases %+v (other.yaml defines environments, not prod: skipped)", rels)
	}
	r := rels[0]
	if reg, _ := r.Values["image"].(map[string]any)["registry"].(string); reg != "reg.prod" {
		t.Errorf("registry %q: the parent's environment was not inherited", reg)
	}
	if !slices.Equal(r.Render.APIVersions, []string{"example.com/v1", "gateway.networking.k8s.io/v1"}) || r.Render.KubeVersion != "v1.31.0" {
		t.Errorf("render %+v", r.Render)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], `environment "prod" is not defined in other.yaml (defined: default): skipped`) {
		t.Errorf("notices %q", notices)
	}
}

// TestReleaseTemplateInherit: releases take their templates' fields
// (inherit:, defaultInherit:), except what they exclude; values append.
// A field the first template sets wins, even over the release's own, as
// helmfile's merge (mergo without override) has it.
func TestReleaseTemplateInherit(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml": `defaultInherit: common
templates:
  common:
    namespace: apps
  base:
    chart: ` + chart + `
    labels: {tier: base}
    values: [{from: base}]
  front:
    inherit: [{template: base, except: [labels]}]
    labels: {tier: front}
    values: [{from: front, image: {repository: corp/front}}]
releases:
  - name: a
    inherit: [{template: front}]
    values: [{from: a}]
  - name: b
    namespace: own
    inherit: [{template: base, except: [values]}]
`,
	})
	rels, err := LoadReleases(context.Background(), dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 2 {
		t.Fatalf("releases %+v", rels)
	}
	a, b := rels[0], rels[1]
	if a.err != nil || b.err != nil {
		t.Fatalf("errors: %v, %v", a.err, b.err)
	}
	if a.Namespace != "apps" || a.Labels["tier"] != "front" || a.Values["from"] != "a" || a.Chart != chart {
		t.Errorf("a: ns %s labels %v values %v chart %s", a.Namespace, a.Labels, a.Values, a.Chart)
	}
	if b.Namespace != "apps" || b.Labels["tier"] != "base" || b.Values["from"] != nil {
		t.Errorf("b: ns %s labels %v values %v", b.Namespace, b.Labels, b.Values)
	}
}

// TestEnvironmentSecretsReported: environment secrets (sops) are not
// decrypted, and that is said, not passed over.
func TestEnvironmentSecretsReported(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml": "environments:\n  default:\n    secrets: [secrets.yaml]\nreleases:\n  - name: a\n    chart: " + chart + "\n",
	})
	var got []Notice
	if _, err := LoadReleases(context.Background(), dir, LoadOptions{Notify: func(n Notice) { got = append(got, n) }}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Level != "Warn" || !strings.Contains(got[0].String(), "secrets: are sops files, not decrypted") {
		t.Errorf("notices %+v", got)
	}
}

// TestInheritsUnknownKey: an inherits: entry helmfile does not know is an
// error naming it, as in helmfile.
func TestInheritsUnknownKey(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml": "helmfiles:\n  - path: child.yaml\n    inherits: [environments, bogusKey]\n",
		"child.yaml":    "releases: []\n",
	})
	_, err := LoadReleases(context.Background(), dir, LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `invalid inherits entry "bogusKey"`) {
		t.Errorf("error = %v", err)
	}
}

// TestTopLevelEnvironment: at the top, a helmfile without environments:
// takes an environment only when state values are given (helmfile's hasEnv);
// in a helmfile.d, files that cannot have it are skipped, and the run fails
// only when none can.
func TestTopLevelEnvironment(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	rel := "releases:\n  - name: %s\n    chart: " + chart + "\n"
	dir := writeFiles(t, map[string]string{
		"plain/helmfile.yaml":          strings.Replace(rel, "%s", "plain", 1),
		"d/helmfile.d/10-prod.yaml":    "environments:\n  prod: {}\n---\n" + strings.Replace(rel, "%s", "in-prod", 1),
		"d/helmfile.d/20-staging.yaml": "environments:\n  staging: {}\n---\n" + strings.Replace(rel, "%s", "in-staging", 1),
	})
	ctx := context.Background()
	if _, err := LoadReleases(ctx, filepath.Join(dir, "plain"), LoadOptions{Environment: "prod"}); err == nil ||
		!strings.Contains(err.Error(), `environment "prod" is not defined in helmfile.yaml (it defines no environments: and none was passed down to it)`) {
		t.Errorf("no environments, none given: %v", err)
	}
	rels, err := LoadReleases(ctx, filepath.Join(dir, "plain"), LoadOptions{Environment: "prod", StateValuesSet: []string{"a=1"}})
	if err != nil || len(rels) != 1 {
		t.Errorf("no environments, state values given: %v %v", rels, err)
	}
	rels, err = LoadReleases(ctx, filepath.Join(dir, "d"), LoadOptions{Environment: "prod"})
	if err != nil || len(rels) != 1 || rels[0].Name != "in-prod" {
		t.Errorf("helmfile.d: %+v %v", rels, err)
	}
	if _, err := LoadReleases(ctx, filepath.Join(dir, "d"), LoadOptions{Environment: "dev"}); err == nil || !strings.Contains(err.Error(), `environment "dev" is not defined`) {
		t.Errorf("helmfile.d, defined nowhere: %v", err)
	}
}

// TestLeadingSeparator: a helmfile that opens with "---" has an empty
// first part starting on the same line as the next: each is its own. The
// state's namespace: overrides the release's, as helmfile's ApplyOverrides.
func TestLeadingSeparator(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml.gotmpl": "---\nenvironments:\n  default:\n    values: [{app: {name: a}}]\n---\nnamespace: ns1\nreleases:\n  - name: {{ .Values.app.name }}\n    namespace: own\n    chart: " + chart + "\n",
	})
	rels, err := LoadReleases(context.Background(), dir, LoadOptions{})
	if err != nil || len(rels) != 1 || rels[0].Name != "a" || rels[0].Namespace != "ns1" {
		t.Errorf("%+v %v", rels, err)
	}
}

// TestReleaseSecrets: a release's secrets files that are missing go to its
// missingFileHandler, as in helmfile; one that exists fails the release,
// named: it needs sops.
func TestReleaseSecrets(t *testing.T) {
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	dir := writeFiles(t, map[string]string{
		"helmfile.yaml": "releases:\n  - name: a\n    chart: " + chart + "\n    missingFileHandler: Warn\n    secrets: [\"secrets/{{`{{ .Release.Name }}`}}.yaml\"]\n" +
			"  - name: b\n    chart: " + chart + "\n    missingFileHandler: Warn\n    secrets: [\"secrets/{{`{{ .Release.Name }}`}}.yaml\"]\n",
		"secrets/b.yaml": "password: ENC[...]\n",
	})
	var notices []string
	rels, err := LoadReleases(context.Background(), dir, LoadOptions{Notify: func(n Notice) { notices = append(notices, n.String()) }})
	if err != nil || len(rels) != 2 {
		t.Fatalf("%+v %v", rels, err)
	}
	if rels[0].err != nil || len(notices) != 1 || !strings.Contains(notices[0], "optional secrets file "+filepath.Join(dir, "secrets/a.yaml")) {
		t.Errorf("a: %v, notices %q", rels[0].err, notices)
	}
	if rels[1].err == nil || !strings.Contains(rels[1].err.Error(), "secrets/b.yaml need sops") {
		t.Errorf("b: %v", rels[1].err)
	}
}
