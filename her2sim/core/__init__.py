"""her2sim core"""
