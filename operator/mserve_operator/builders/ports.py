"""The runtime's ports: REST and gRPC behind the Service; admin (metrics, OpenAPI, docs) for the scraper."""

HTTP_PORT = 8080
GRPC_PORT = 8081
ADMIN_PORT = 8082
