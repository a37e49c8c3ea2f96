// Force-included before ggml-vulkan's sources (cmake/ggml-vulkan/CMakeLists.txt): what the
// pinned ggml-vulkan needs of Vulkan headers newer than some distributions ship. Debian 12's
// libvulkan-dev (1.3.239) predates VK_EXT_layer_settings (headers 1.3.261), which ggml-vulkan
// names when it creates its instance: it chains a VkLayerSettingsCreateInfoEXT (asking the
// validation layer, when present, for best-practice checks) into vkCreateInstance, as newer
// headers would compile it. Loaders and drivers skip chained structures they do not know.
// With headers that have the extension this file declares nothing.
#pragma once
#include <vulkan/vulkan_core.h>

#ifndef VK_EXT_layer_settings
#include <cstdint>
#include <vector>
namespace vk {
enum class LayerSettingTypeEXT : int32_t {
    eBool32 = 0,
    eInt32 = 1,
    eInt64 = 2,
    eUint32 = 3,
    eUint64 = 4,
    eFloat32 = 5,
    eFloat64 = 6,
    eString = 7,
};
// VkLayerSettingEXT
struct LayerSettingEXT {
    const char * pLayerName;
    const char * pSettingName;
    LayerSettingTypeEXT type;
    uint32_t valueCount;
    const void * pValues;
};
// VkLayerSettingsCreateInfoEXT
struct LayerSettingsCreateInfoEXT {
    explicit LayerSettingsCreateInfoEXT(const std::vector<LayerSettingEXT> & settings)
        : settingCount(static_cast<uint32_t>(settings.size())), pSettings(settings.data()) {}
    VkStructureType sType = static_cast<VkStructureType>(1000496000); // ..._LAYER_SETTINGS_CREATE_INFO_EXT
    const void * pNext = nullptr;
    uint32_t settingCount;
    const LayerSettingEXT * pSettings;
};
}  // namespace vk
#endif
