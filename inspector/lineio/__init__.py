"""Line I/O: the PLC servers (OPC UA, Modbus TCP) and the MQTT shipper, at the edge of the station."""
