package images

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestListAndWrite(t *testing.T) {
	l := NewList()
	l.Add(
		Found{Raw: "nginx:1", Source: Source{Chart: "web", ChartVersion: "0.1.0", Kind: "Deployment", Name: "w", Path: "p"}},
		Found{Raw: "docker.io/library/nginx:1", Source: Source{Chart: "api", ChartVersion: "2.0.0", Certainty: Maybe, Reason: "values"}},
		Found{Raw: "hub.bktencent.com/blueking/slug-app:1", Source: Source{Chart: "api", ChartVersion: "2.0.0", Certainty: Maybe, Reason: "values"}},
		Found{Raw: "quay.io/a/b:1", Source: Source{Chart: "api", ChartVersion: "2.0.0"}},
		Found{Raw: "{{ bad }}", Source: Source{Chart: "api", Kind: "Pod", Name: "x"}},
		Found{Raw: "Bad Maybe", Source: Source{Certainty: Maybe}},
	)
	if l.Len() != 3 || len(l.Invalid()) != 1 {
		t.Fatalf("len %d, invalid %v", l.Len(), l.Invalid())
	}
	check := func(opts WriteOptions, want string) {
		t.Helper()
		var b bytes.Buffer
		if err := Write(&b, l, opts); err != nil {
			t.Fatal(err)
		}
		if b.String() != want {
			t.Errorf("Write(%+v) =\n%s\nwant\n%s", opts, b.String(), want)
		}
	}
	check(WriteOptions{}, "docker.io/library/nginx:1\nquay.io/a/b:1\n")
	check(WriteOptions{IncludeMaybe: true}, "docker.io/library/nginx:1\nquay.io/a/b:1\n# maybe: pulled at run time perhaps (values, env vars, ConfigMaps, chart annotations)\nhub.bktencent.com/blueking/slug-app:1\n")
	check(WriteOptions{Format: "chart-images"}, "api\t2.0.0\tdocker.io/library/nginx:1\tquay.io/a/b:1\nweb\t0.1.0\tdocker.io/library/nginx:1\n")
	check(WriteOptions{Rewrites: Rewrites{All: "10.0.0.1:5500"}}, "10.0.0.1:5500/library/nginx:1\n10.0.0.1:5500/a/b:1\n")

	var b bytes.Buffer
	if err := Write(&b, l, WriteOptions{Format: "json", Rewrites: Rewrites{All: "c:5000"}}); err != nil {
		t.Fatal(err)
	}
	var doc Document
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Images) != 2 || doc.Images[0].Original != "docker.io/library/nginx:1" || doc.Images[0].Reference != "c:5000/library/nginx:1" ||
		len(doc.Images[0].Sources) != 2 || len(doc.Invalid) != 1 || doc.Invalid[0].Source.Name != "x" {
		t.Errorf("json = %s", b.String())
	}
	b.Reset()
	if err := Write(&b, l, WriteOptions{Format: "yaml"}); err != nil || !strings.Contains(b.String(), "reference: quay.io/a/b:1") {
		t.Errorf("yaml = %s, %v", b.String(), err)
	}
	if err := Write(&b, l, WriteOptions{Format: "xml"}); err == nil || !strings.Contains(err.Error(), "chart-images") {
		t.Errorf("bad format error = %v", err)
	}
	img, ok := l.Why("nginx:1")
	if !ok || img.Certainty != Sure {
		t.Fatalf("Why = %+v, %v", img, ok)
	}
	b.Reset()
	_ = WriteWhy(&b, img)
	if !strings.Contains(b.String(), "chart=web@0.1.0 object=Deployment/w path=p certainty=sure") {
		t.Errorf("why = %s", b.String())
	}
}
