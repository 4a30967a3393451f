module mserve.local/tests/cluster/testimage

go 1.24.0
