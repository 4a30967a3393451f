module mserve.local/hack/images/pause

go 1.24.0
