package transfer

import (
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	in := `# BlueKing images
hub.bktencent.com/blueking/bk-paas:1.2.3
hub.bktencent.com/blueking/bk-paas:1.2.3   # a duplicate is dropped
  hub.bktencent.com/blueking/slug-app:v1.1.0-beta.27
bk-paas 1.2.3 hub.bktencent.com/blueking/bk-paas:1.2.3 hub.bktencent.com/blueking/bk-apigateway:1.0
bad line!
two hub.bktencent.com/a:1
Not/A:Reference

nginx@sha256:` + strings.Repeat("a", 64) + `
`
	entries, errs := ParseList(strings.NewReader(in))
	var got []string
	for _, e := range entries {
		got = append(got, e.Ref.Name())
	}
	want := []string{
		"hub.bktencent.com/blueking/bk-paas:1.2.3",
		"hub.bktencent.com/blueking/slug-app:v1.1.0-beta.27",
		"hub.bktencent.com/blueking/bk-apigateway:1.0",
		"index.docker.io/library/nginx@sha256:" + strings.Repeat("a", 64),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Error()[:strings.Index(e.Error(), ":")])
	}
	if strings.Join(lines, ",") != "line 6,line 7,line 8" {
		t.Errorf("bad lines reported: %v", errs)
	}
	if entries[2].Line != 5 {
		t.Errorf("chart-images entry has line %d, want 5", entries[2].Line)
	}
}
