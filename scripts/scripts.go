// Package scripts holds the Lua that runs inside Redis, one file per limiter
// operation. Each operation script is sent with common.lua in front of it, so
// that all of them share one way to prune, read the clock and reply.
//
// The files are the contract with Redis: each documents its KEYS, ARGV and
// reply, and package limiter is the only reader of those replies.
package scripts

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed *.lua
var files embed.FS

// The limiter's operations, ready for redis.Script.Run (EVALSHA, then EVAL on
// NOSCRIPT, so a restarted Redis with an empty script cache costs one retry).
var (
	Acquire = load("acquire.lua")
	Renew   = load("renew.lua")
	Release = load("release.lua")
	Active  = load("active.lua")
)

// Source returns the full text sent to Redis for the named operation file
// (common.lua followed by it), for tools that load scripts themselves.
func Source(name string) (string, error) {
	common, err := files.ReadFile("common.lua")
	if err != nil {
		return "", err
	}
	op, err := files.ReadFile(name)
	if err != nil {
		return "", err
	}
	return string(common) + string(op), nil
}

func load(name string) *redis.Script {
	src, err := Source(name)
	if err != nil {
		panic(err) // embedded at build time: cannot fail unless the name is wrong
	}
	return redis.NewScript(src)
}
