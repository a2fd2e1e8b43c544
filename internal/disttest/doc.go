// Package disttest checks the release files `make dist` builds, end to end (build
// tag e2e, so `make test` runs it): the archives and their checksums, krew's
// manifest, install.sh under dash on a PATH without Go, the plugins it installs
// run through the real docker and kubectl, refusals that change nothing, and two
// builds giving the same bytes.
//
//	go test -tags e2e -count=1 -v ./internal/disttest/
package disttest
