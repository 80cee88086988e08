package failover

import (
	"testing"

	"github.com/limiterd/limiterd/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }
