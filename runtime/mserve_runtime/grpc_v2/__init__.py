"""The V2 Open Inference Protocol over gRPC (`inference.GRPCInferenceService`)."""
