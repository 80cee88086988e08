// Package deploy holds no code of the service. It is a Go module of its own so
// that the tests of the deployment files beside it (Dockerfile, compose.yaml,
// redis.conf, k8s/) can use the Kubernetes and Compose libraries without
// adding them to the service's go.mod. Run them with
//
//	cd deploy && go test ./...
//
// README.md in this folder says what each test checks.
package deploy
