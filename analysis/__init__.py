"""her2sim.analysis"""
