package transfer

import (
	"strings"
	"testing"
)

func TestParseList(t *testing.T) {
	in := "\ufeff# BlueKing images\r\n" + `hub.bktencent.com/blueking/bk-paas:1.2.3
hub.bktencent.com/blueking/bk-paas:1.2.3   # a duplicate is dropped
  hub.bktencent.com/blueking/slug-app:v1.1.0-beta.27
bk-paas 1.2.3 hub.bktencent.com/blueking/bk-paas:1.2.3 hub.bktencent.com/blueking/bk-apigateway:1.0
bad line!
two hub.bktencent.com/a:1
Not/A:Reference

nginx@sha256:` + strings.Repeat("a", 64) + `
busybox alpine redis
bk-ci	2.1.0	hub.bktencent.com/bkce/bkci-gateway:2.1.0	docker.io/bitnami/kubectl:1.28.4
hub.bktencent.com/blueking/../../etc/passwd:1
hub.bktencent.com//x:1
evil` + "\x1b[2J" + `:1
zero` + "\u200b" + `width:1
- - busybox:1.36
` + strings.Repeat("x", MaxLineBytes+10) + `
after/long:1
last/line:1`
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
		"hub.bktencent.com/bkce/bkci-gateway:2.1.0",
		"index.docker.io/bitnami/kubectl:1.28.4",
		"index.docker.io/library/busybox:1.36",
		"index.docker.io/after/long:1",
		"index.docker.io/last/line:1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var lines []string
	for _, e := range errs {
		lines = append(lines, e.Error()[:strings.Index(e.Error(), ":")])
	}
	if strings.Join(lines, ",") != "line 6,line 7,line 8,line 11,line 13,line 14,line 15,line 16,line 18" {
		t.Errorf("bad lines reported: %v", errs)
	}
	if entries[2].Line != 5 || entries[4].Line != 12 {
		t.Errorf("entries have lines %d and %d, want 5 and 12", entries[2].Line, entries[4].Line)
	}
	for _, e := range errs {
		msg := e.Error()
		if strings.ContainsRune(msg, '\x1b') || strings.ContainsRune(msg, '\u200b') {
			t.Errorf("error passes a control character through: %q", msg)
		}
		if len(msg) > 400 {
			t.Errorf("error quotes a whole long line: %d bytes", len(msg))
		}
	}
	for _, want := range []string{"line 11: \"busybox alpine redis\"", "3 words on one line", `path component ".."`, "line 18:", "longer than"} {
		if !strings.Contains(joinErrs(errs), want) {
			t.Errorf("errors lack %q:\n%s", want, joinErrs(errs))
		}
	}
}

func joinErrs(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error() + "\n")
	}
	return b.String()
}
