"""her2sim.phantoms"""
